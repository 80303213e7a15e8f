//! How the reference cache stores a value's JSON text: compressed with a
//! zstd dictionary (level 1) per reference kind, or raw.
//!
//! * The dictionary of a kind is trained once, from the first
//!   [`TRAIN_SAMPLES`] values of that kind stored; until then (and when
//!   training fails) values are stored raw. Once trained a dictionary is never
//!   replaced, so a packed value never needs to name the dictionary it used.
//! * A value is stored raw whenever compressing it would not make it smaller.
//! * Compression and decompression contexts are per thread (no lock on a
//!   hit); the dictionaries are shared, read-only, by every thread.
//!
//! Nothing here panics on bad input: a value that does not decompress (it
//! cannot happen short of memory corruption) reads as `None`, a miss.

use std::cell::RefCell;
use std::sync::{Mutex, OnceLock};

use zstd::zstd_safe::{self, CCtx, CDict, DCtx, DDict};

use crate::ids::RefKind;

/// Values of a kind its dictionary is trained from.
pub const TRAIN_SAMPLES: usize = 256;

/// The dictionary size asked of the trainer.
const DICT_BYTES: usize = 16 * 1024;

/// Training attempts per kind before it stays raw.
const TRAIN_ATTEMPTS: u8 = 3;

/// The zstd level (1: the fastest; a dictionary does most of the work).
const LEVEL: i32 = 1;

/// How one value is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The JSON text itself.
    Raw,
    /// A zstd frame made with its kind's dictionary.
    Packed,
}

/// The trained dictionary of a kind, both directions.
struct Dict {
    /// For compressing.
    cdict: CDict<'static>,
    /// For decompressing.
    ddict: DDict<'static>,
    /// Its size in bytes (reported in `PROFILE.md`, tests).
    len: usize,
}

/// One kind's state.
#[derive(Default)]
struct KindPack {
    /// The dictionary, once trained.
    dict: OnceLock<Dict>,
    /// Samples gathered until then, and the attempts made.
    training: Mutex<(Vec<Box<[u8]>>, u8)>,
}

/// The dictionaries of one reference cache, one per kind. Cheap to build:
/// nothing is allocated until a kind's first value is stored.
#[derive(Default)]
pub struct Packer {
    /// Indexed by [`kind_index`].
    kinds: [KindPack; 4],
}

/// The slot of `kind` in [`Packer::kinds`].
fn kind_index(kind: RefKind) -> usize {
    match kind {
        RefKind::UserProfile => 0,
        RefKind::Hierarchy => 1,
        RefKind::AuditLog => 2,
        RefKind::Historical => 3,
    }
}

thread_local! {
    /// This thread's compression context.
    static CCTX: RefCell<Option<CCtx<'static>>> = const { RefCell::new(None) };
    /// This thread's decompression context.
    static DCTX: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

impl Packer {
    /// The form and bytes to store `text` (a value of `kind`) as. Gathers it
    /// as a training sample while the kind has no dictionary, and trains the
    /// dictionary (on this thread, once per kind) when enough are gathered.
    pub fn pack(&self, kind: RefKind, text: &str) -> (Form, Box<[u8]>) {
        let k = &self.kinds[kind_index(kind)];
        let Some(dict) = k.dict.get().or_else(|| self.gather(k, text)) else {
            return (Form::Raw, text.as_bytes().into());
        };
        match compress(text.as_bytes(), dict) {
            Some(packed) if packed.len() < text.len() => (Form::Packed, packed.into_boxed_slice()),
            _ => (Form::Raw, text.as_bytes().into()),
        }
    }

    /// The JSON text stored as `form`/`bytes` for `kind`; `None` if it cannot
    /// be read back (never for what [`Packer::pack`] made).
    pub fn unpack(&self, kind: RefKind, form: Form, bytes: &[u8]) -> Option<String> {
        match form {
            Form::Raw => String::from_utf8(bytes.to_vec()).ok(),
            Form::Packed => {
                let dict = self.kinds[kind_index(kind)].dict.get()?;
                String::from_utf8(decompress(bytes, dict)?).ok()
            }
        }
    }

    /// The size of `kind`'s dictionary, once trained.
    pub fn dict_len(&self, kind: RefKind) -> Option<usize> {
        self.kinds[kind_index(kind)].dict.get().map(|d| d.len)
    }

    /// Adds `text` to the samples of `k`; trains once there are enough.
    fn gather<'a>(&self, k: &'a KindPack, text: &str) -> Option<&'a Dict> {
        let mut t = k.training.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = k.dict.get() {
            return Some(d);
        }
        if t.1 >= TRAIN_ATTEMPTS {
            return None;
        }
        t.0.push(text.as_bytes().into());
        if t.0.len() < TRAIN_SAMPLES {
            return None;
        }
        let samples = std::mem::take(&mut t.0);
        t.1 += 1;
        let trained = zstd::dict::from_samples(&samples, DICT_BYTES).ok()?;
        let dict = Dict {
            cdict: CDict::try_create(&trained, LEVEL)?,
            ddict: DDict::try_create(&trained)?,
            len: trained.len(),
        };
        let _ = k.dict.set(dict);
        k.dict.get()
    }
}

/// `src` compressed with `dict` by this thread's context.
fn compress(src: &[u8], dict: &Dict) -> Option<Vec<u8>> {
    CCTX.with(|c| {
        let mut c = c.try_borrow_mut().ok()?;
        let cctx = match &mut *c {
            Some(x) => x,
            slot => slot.insert(CCtx::try_create()?),
        };
        let mut out = Vec::with_capacity(zstd_safe::compress_bound(src.len()));
        cctx.compress_using_cdict(&mut out, src, &dict.cdict).ok()?;
        Some(out)
    })
}

/// A frame made by [`compress`] with `dict`, decompressed by this thread's
/// context.
fn decompress(src: &[u8], dict: &Dict) -> Option<Vec<u8>> {
    let len = zstd_safe::get_frame_content_size(src).ok()??;
    let len = usize::try_from(len).ok()?;
    DCTX.with(|c| {
        let mut c = c.try_borrow_mut().ok()?;
        let dctx = match &mut *c {
            Some(x) => x,
            slot => slot.insert(DCtx::try_create()?),
        };
        let mut out = Vec::with_capacity(len);
        let n = dctx
            .decompress_using_ddict(&mut out, src, &dict.ddict)
            .ok()?;
        (n == len).then_some(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(i: usize) -> String {
        format!(
            r#"{{"userId":"u{i:07}","name":"User {i}","email":"user{i}@example.com","department":"dept-{d}","title":"Engineer","manager":"u{m:07}","location":"Site {d}","preferences":{{"theme":"dark","language":"en","notifications":true}},"tags":["a","b","c"],"bio":"{bio}"}}"#,
            d = i % 17,
            m = i / 10,
            bio = "lorem ipsum dolor sit amet ".repeat(20),
        )
    }

    #[test]
    fn values_are_raw_until_trained_then_packed_and_round_trip() {
        let p = Packer::default();
        for i in 0..TRAIN_SAMPLES - 1 {
            let (form, bytes) = p.pack(RefKind::UserProfile, &profile(i));
            assert_eq!(form, Form::Raw, "sample {i} before training");
            assert_eq!(
                p.unpack(RefKind::UserProfile, form, &bytes).unwrap(),
                profile(i)
            );
        }
        assert!(p.dict_len(RefKind::UserProfile).is_none());
        // The 256th value trains the dictionary and is packed with it.
        let (form, _) = p.pack(RefKind::UserProfile, &profile(TRAIN_SAMPLES - 1));
        assert_eq!(form, Form::Packed);
        assert!(p.dict_len(RefKind::UserProfile).is_some());
        assert!(
            p.dict_len(RefKind::Hierarchy).is_none(),
            "one dictionary per kind"
        );
        for i in 1000..1100 {
            let text = profile(i);
            let (form, bytes) = p.pack(RefKind::UserProfile, &text);
            assert_eq!(form, Form::Packed);
            assert!(
                bytes.len() * 3 < text.len(),
                "{} of {}",
                bytes.len(),
                text.len()
            );
            assert_eq!(p.unpack(RefKind::UserProfile, form, &bytes).unwrap(), text);
        }
        // Other threads read them too (their own contexts).
        let (form, bytes) = p.pack(RefKind::UserProfile, &profile(7));
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(
                    p.unpack(RefKind::UserProfile, form, &bytes).unwrap(),
                    profile(7)
                )
            });
        });
    }

    #[test]
    fn a_value_compression_does_not_shrink_is_stored_raw() {
        let p = Packer::default();
        for i in 0..TRAIN_SAMPLES {
            p.pack(RefKind::AuditLog, &profile(i));
        }
        assert!(p.dict_len(RefKind::AuditLog).is_some());
        // Tiny or incompressible: raw, and read back as is.
        for text in ["{}", "[1]", r#"{"k":"Zq8#xW!p2@Lm9&Tr4$Vb"}"#] {
            let (form, bytes) = p.pack(RefKind::AuditLog, text);
            assert_eq!(form, Form::Raw, "{text}");
            assert_eq!(&*bytes, text.as_bytes());
            assert_eq!(p.unpack(RefKind::AuditLog, form, &bytes).unwrap(), text);
        }
        // Garbage that claims to be packed reads as nothing, not a panic.
        assert_eq!(p.unpack(RefKind::AuditLog, Form::Packed, b"not zstd"), None);
        assert_eq!(p.unpack(RefKind::Historical, Form::Packed, b"x"), None);
    }
}
