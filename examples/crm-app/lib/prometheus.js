'use strict'
// Merges Prometheus text from several consumers (one per tenant) into one
// valid exposition: each metric family's HELP and TYPE once, then the samples
// of every tenant. Concatenating metricsText() outputs would repeat them,
// which Prometheus rejects.

function mergeExpositions(texts) {
  const families = new Map() // name → { help, type, samples: [] }
  const family = (name) => {
    let f = families.get(name)
    if (!f) families.set(name, (f = { help: null, type: null, samples: [] }))
    return f
  }
  for (const text of texts) {
    for (const line of text.split('\n')) {
      if (line === '') continue
      const meta = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line)
      if (meta) {
        const f = family(meta[2])
        if (meta[1] === 'HELP') f.help ??= line
        else f.type ??= line
        continue
      }
      if (line.startsWith('#')) continue
      const name = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line)
      if (name) family(name[0]).samples.push(line)
    }
  }
  const out = []
  for (const f of families.values()) {
    if (f.help) out.push(f.help)
    if (f.type) out.push(f.type)
    out.push(...f.samples)
  }
  return out.join('\n') + '\n'
}

module.exports = { mergeExpositions }
