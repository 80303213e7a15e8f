//! Where Redis is (SPEC §6): one server (`redisUrl`, `rediss://` for TLS), a
//! Sentinel-managed master (`redisSentinel`), or a Redis Cluster
//! (`redisCluster`), with optional TLS material (`redisTls`: a private CA, a
//! client certificate for mutual TLS, a server name). Validates those options
//! (for the consumer and the publisher alike) and opens connections to them.
//!
//! * **Server**: one URL.
//! * **Sentinel**: every connection asks the sentinels for the current master
//!   (`SENTINEL get-master-addr-by-name`, the redis crate's sentinel client),
//!   so a reconnect after a failover reaches the promoted replica. Sentinel
//!   kills client connections when it reconfigures a master, and a dead master
//!   drops them: both end the session like any lost link (resync).
//! * **Cluster**: classic pub/sub is broadcast to every node of a Redis
//!   Cluster, so the consumer subscribes on one node and the publisher
//!   publishes through one, whichever answers first in the list (tried from
//!   a random place in it, to spread a fleet over the nodes); when that
//!   node fails over or dies the link is lost and the next connection goes to
//!   another node. (Sharded pub/sub, `SSUBSCRIBE`, would spread the bus
//!   traffic but needs every publisher to use `SPUBLISH` on the slot's owner:
//!   classic pub/sub keeps publishers in any language unchanged.) Keys the
//!   package writes (SPEC §7) carry the `{tenant}` hash tag so one tenant
//!   stays in one slot; a command sent to a node that does not own it is
//!   redirected (`MOVED`), and [`RedisTarget::connect_node`] opens the
//!   connection to the owner.
//!
//! Error descriptions never hold a URL, a password or certificate material;
//! a TLS failure says it is one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, ConnectionAddr, ConnectionInfo,
    IntoConnectionInfo, ProtocolVersion, RedisError, RedisResult, TlsCertificates, TlsMode,
};
use serde_json::{Map, Value};

use crate::error::{CoreError, Result};
use crate::secret::Secret;

/// The option names this module reads.
pub const OPTIONS: [&str; 4] = ["redisUrl", "redisSentinel", "redisCluster", "redisTls"];

/// TLS material from `redisTls` (PEM text; all of it kept as secrets so no
/// debug output prints it).
#[derive(Debug, Clone)]
struct TlsMaterial {
    /// CA certificate(s) to trust instead of the system's.
    ca: Option<Secret>,
    /// Client certificate, for mutual TLS (with `key`).
    cert: Option<Secret>,
    /// Client key.
    key: Option<Secret>,
    /// The name to verify the server's certificate against (and send as
    /// SNI) when it differs from the host connected to.
    servername: Option<String>,
}

/// Which Redis.
#[derive(Debug, Clone)]
enum Topology {
    /// One server.
    Server {
        /// Its URL (may hold a password).
        url: Secret,
    },
    /// A master found through sentinels.
    Sentinel {
        /// `host:port` of each sentinel.
        sentinels: Vec<(String, u16)>,
        /// The master's name at the sentinels.
        master_name: String,
        /// ACL user of the master.
        username: Option<String>,
        /// Password of the master.
        password: Option<Secret>,
        /// Password of the sentinels.
        sentinel_password: Option<Secret>,
        /// Database on the master.
        db: i64,
        /// TLS to the sentinels and the master.
        tls: bool,
    },
    /// Nodes of a cluster, any reachable subset.
    Cluster {
        /// `redis://` or `rediss://` URL of each node.
        nodes: Vec<Secret>,
    },
}

impl Topology {
    /// True when its connections use TLS.
    fn uses_tls(&self) -> bool {
        match self {
            Topology::Server { url } => url.expose().starts_with("rediss://"),
            Topology::Sentinel { tls, .. } => *tls,
            Topology::Cluster { nodes } => {
                nodes.iter().any(|n| n.expose().starts_with("rediss://"))
            }
        }
    }
}

/// See the module docs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RedisTarget {
    /// Which Redis.
    topology: Topology,
    /// `redisTls`, when given.
    tls: Option<TlsMaterial>,
    /// A description without secrets, for logs and errors.
    described: String,
    /// With Cluster: node URLs learned from `CLUSTER NODES` on the last
    /// connection (seed URL with another host and port), tried after the
    /// seeds, so a fleet survives the loss of every listed seed. Shared by
    /// the clones of this target.
    learned: Arc<Mutex<Vec<Secret>>>,
}

/// Maps a host name to the address actually connected to, so that a
/// certificate is verified against `servername` while the socket goes to
/// the URL's host.
struct PinnedResolver {
    /// `servername` → the real address.
    name: String,
    /// Where it goes.
    target: Vec<SocketAddr>,
}

impl redis::io::AsyncDNSResolver for PinnedResolver {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        host: &'b str,
        port: u16,
    ) -> redis::RedisFuture<'a, Box<dyn Iterator<Item = SocketAddr> + Send + 'a>> {
        Box::pin(async move {
            if host == self.name {
                return Ok(Box::new(self.target.clone().into_iter())
                    as Box<dyn Iterator<Item = SocketAddr> + Send>);
            }
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as Box<dyn Iterator<Item = SocketAddr> + Send>)
        })
    }
}

fn opt_str(obj: &Map<String, Value>, name: &str, path: &str) -> Result<Option<String>> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(CoreError::option_range(path, "a non-empty string")),
        Some(_) => Err(CoreError::option_type(path, "a string")),
    }
}

fn known_keys(obj: &Map<String, Value>, option: &str, keys: &[&str]) -> Result<()> {
    match obj.keys().find(|k| !keys.contains(&k.as_str())) {
        Some(k) => Err(CoreError::option_type(
            &format!("{option}.{k}"),
            format!("one of {} (unknown option name)", keys.join(", ")),
        )),
        None => Ok(()),
    }
}

fn host_port(s: &str, path: &str) -> Result<(String, u16)> {
    let bad = || CoreError::option_range(path, "a \"host:port\" string");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let valid_host = host.parse::<std::net::IpAddr>().is_ok() || url::Host::parse(host).is_ok();
    if port == 0 || !valid_host || host.contains('@') {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

/// Checks a Redis URL and returns it with any password replaced by `***`.
pub fn check_redis_url(raw: &str, option: &str) -> Result<String> {
    let bad = || {
        CoreError::option_range(
            option,
            "a redis:// or rediss:// URL with a host and no #fragment (the value is not shown: it may hold a password)",
        )
    };
    let mut u = url::Url::parse(raw).map_err(|_| bad())?;
    if !matches!(u.scheme(), "redis" | "rediss") || u.host_str().is_none() {
        return Err(bad());
    }
    // `#insecure` (skip certificate checks) cannot be honoured by this build;
    // any fragment is refused rather than silently failing every connect.
    if u.fragment().is_some() {
        return Err(bad());
    }
    redis::IntoConnectionInfo::into_connection_info(raw).map_err(|_| bad())?;
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    Ok(u.to_string())
}

/// Which PEM a `redisTls` member holds.
#[derive(Clone, Copy)]
enum PemKind {
    /// One or more certificates (`ca`, `cert`).
    Certificates,
    /// A private key (`key`).
    Key,
}

fn pem(obj: &Map<String, Value>, name: &str, kind: PemKind) -> Result<Option<Secret>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let path = format!("redisTls.{name}");
    let Some(text) = opt_str(obj, name, &path)? else {
        return Ok(None);
    };
    let ok = match kind {
        PemKind::Certificates => {
            let certs: Vec<_> = CertificateDer::pem_slice_iter(text.as_bytes()).collect();
            !certs.is_empty() && certs.iter().all(|c| c.is_ok())
        }
        PemKind::Key => PrivateKeyDer::from_pem_slice(text.as_bytes()).is_ok(),
    };
    if !ok {
        let what = match kind {
            PemKind::Certificates => "PEM certificate text",
            PemKind::Key => "a PEM private key",
        };
        return Err(CoreError::option_range(
            &path,
            format!("{what} (it could not be read; the value is not shown)"),
        ));
    }
    Ok(Some(Secret::new(text)))
}

fn parse_tls(v: Option<&Value>) -> Result<Option<TlsMaterial>> {
    let obj = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(CoreError::option_type("redisTls", "an object")),
    };
    known_keys(obj, "redisTls", &["ca", "cert", "key", "servername"])?;
    let tls = TlsMaterial {
        ca: pem(obj, "ca", PemKind::Certificates)?,
        cert: pem(obj, "cert", PemKind::Certificates)?,
        key: pem(obj, "key", PemKind::Key)?,
        servername: opt_str(obj, "servername", "redisTls.servername")?,
    };
    match (&tls.cert, &tls.key) {
        (Some(_), None) => {
            return Err(CoreError::option_type(
                "redisTls.key",
                "given with `redisTls.cert` (mutual TLS needs both)",
            ))
        }
        (None, Some(_)) => {
            return Err(CoreError::option_type(
                "redisTls.cert",
                "given with `redisTls.key` (mutual TLS needs both)",
            ))
        }
        _ => {}
    }
    if let Some(name) = &tls.servername {
        if url::Host::parse(name).is_err() {
            return Err(CoreError::option_range(
                "redisTls.servername",
                "a host name",
            ));
        }
    }
    Ok(Some(tls))
}

fn parse_sentinel(v: &Value) -> Result<Topology> {
    let Value::Object(obj) = v else {
        return Err(CoreError::option_type("redisSentinel", "an object"));
    };
    known_keys(
        obj,
        "redisSentinel",
        &[
            "sentinels",
            "masterName",
            "username",
            "password",
            "sentinelPassword",
            "db",
            "tls",
        ],
    )?;
    let sentinels = match obj.get("sentinels") {
        Some(Value::Array(list)) if !list.is_empty() => list
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let path = "redisSentinel.sentinels";
                match s {
                    Value::String(s) => host_port(s, path).map_err(|_| {
                        CoreError::option_range(
                            path,
                            format!("\"host:port\" strings (entry {i} is not)"),
                        )
                    }),
                    _ => Err(CoreError::option_type(
                        path,
                        format!("\"host:port\" strings (entry {i} is not a string)"),
                    )),
                }
            })
            .collect::<Result<Vec<_>>>()?,
        Some(Value::Array(_)) => {
            return Err(CoreError::option_range(
                "redisSentinel.sentinels",
                "a non-empty array of \"host:port\" strings",
            ))
        }
        _ => {
            return Err(CoreError::option_type(
                "redisSentinel.sentinels",
                "an array of \"host:port\" strings (it is required)",
            ))
        }
    };
    let master_name = opt_str(obj, "masterName", "redisSentinel.masterName")?.ok_or_else(|| {
        CoreError::option_type("redisSentinel.masterName", "a string (it is required)")
    })?;
    let db = match obj.get("db") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|d| d <= 1_000_000) => {
            n.as_u64().unwrap_or(0) as i64
        }
        Some(Value::Number(_)) => {
            return Err(CoreError::option_range(
                "redisSentinel.db",
                "an integer from 0",
            ))
        }
        Some(_) => return Err(CoreError::option_type("redisSentinel.db", "a number")),
    };
    let tls = match obj.get("tls") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(CoreError::option_type("redisSentinel.tls", "a boolean")),
    };
    Ok(Topology::Sentinel {
        sentinels,
        master_name,
        username: opt_str(obj, "username", "redisSentinel.username")?,
        password: opt_str(obj, "password", "redisSentinel.password")?.map(Secret::new),
        sentinel_password: opt_str(obj, "sentinelPassword", "redisSentinel.sentinelPassword")?
            .map(Secret::new),
        db,
        tls,
    })
}

fn parse_cluster(v: &Value) -> Result<(Topology, Vec<String>)> {
    let Value::Object(obj) = v else {
        return Err(CoreError::option_type("redisCluster", "an object"));
    };
    known_keys(obj, "redisCluster", &["nodes"])?;
    let Some(Value::Array(list)) = obj.get("nodes") else {
        return Err(CoreError::option_type(
            "redisCluster.nodes",
            "an array of redis:// URLs (it is required)",
        ));
    };
    if list.is_empty() {
        return Err(CoreError::option_range(
            "redisCluster.nodes",
            "a non-empty array of redis:// URLs",
        ));
    }
    let mut nodes = Vec::new();
    let mut redacted = Vec::new();
    for (i, n) in list.iter().enumerate() {
        let path = "redisCluster.nodes";
        let Value::String(s) = n else {
            return Err(CoreError::option_type(
                path,
                format!("redis:// URLs (entry {i} is not a string)"),
            ));
        };
        redacted.push(check_redis_url(s, path).map_err(|_| {
            CoreError::option_range(
                path,
                format!("redis:// or rediss:// URLs with a host (entry {i} is not; the value is not shown)"),
            )
        })?);
        nodes.push(Secret::new(s.clone()));
    }
    Ok((Topology::Cluster { nodes }, redacted))
}

impl RedisTarget {
    /// Reads `redisUrl` / `redisSentinel` / `redisCluster` (exactly one) and
    /// `redisTls` from `obj`; with none of the three, the environment:
    /// `REDIS_URL`, else `REDIS_SENTINELS` (comma-separated `host:port`) with
    /// `REDIS_SENTINEL_MASTER` (and `REDIS_PASSWORD` for the master), else
    /// `REDIS_CLUSTER_NODES` (comma-separated URLs), else a URL built from
    /// `REDIS_HOST`, `REDIS_PORT`, `REDIS_USERNAME`, `REDIS_PASSWORD`, else
    /// `redis://127.0.0.1:6379`. Errors name the option, never a secret.
    pub fn from_options(obj: &Map<String, Value>, env: &HashMap<String, String>) -> Result<Self> {
        let given: Vec<&str> = ["redisUrl", "redisSentinel", "redisCluster"]
            .into_iter()
            .filter(|k| obj.get(*k).is_some_and(|v| !v.is_null()))
            .collect();
        if given.len() > 1 {
            let named: Vec<String> = given.iter().map(|g| format!("`{g}`")).collect();
            return Err(CoreError::InvalidOption {
                kind: crate::error::ArgKind::Type,
                message: format!(
                    "options {} exclude each other: set exactly one of `redisUrl`, `redisSentinel`, `redisCluster`",
                    named.join(" and ")
                ),
            });
        }
        let env_get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        let (topology, described) = match given.first().copied() {
            Some("redisUrl") => match obj.get("redisUrl") {
                Some(Value::String(u)) => server(u, "redisUrl")?,
                _ => return Err(CoreError::option_type("redisUrl", "a string")),
            },
            Some("redisSentinel") => sentinel_target(obj.get("redisSentinel"))?,
            Some("redisCluster") => cluster_target(obj.get("redisCluster"))?,
            _ => from_env(&env_get)?,
        };
        let tls = parse_tls(obj.get("redisTls"))?;
        if tls.is_some() && !topology.uses_tls() {
            return Err(CoreError::option_range(
                "redisTls",
                "given with a rediss:// URL, rediss:// cluster nodes or redisSentinel.tls: true",
            ));
        }
        if tls.as_ref().is_some_and(|t| t.servername.is_some())
            && matches!(topology, Topology::Sentinel { .. })
        {
            return Err(CoreError::option_range(
                "redisTls.servername",
                "used with redisUrl or redisCluster (a sentinel names its master's host)",
            ));
        }
        Ok(RedisTarget {
            topology,
            tls,
            described,
            learned: Arc::default(),
        })
    }

    /// One server at `url` (for Rust callers; JS options go through
    /// [`RedisTarget::from_options`]).
    pub fn url(url: &str) -> Result<Self> {
        let (topology, described) = server(url, "redisUrl")?;
        Ok(RedisTarget {
            topology,
            tls: None,
            described,
            learned: Arc::default(),
        })
    }

    /// A description for logs: the URL with its password masked, or the
    /// sentinels and master name, or the cluster's first node.
    pub fn describe(&self) -> &str {
        &self.described
    }

    /// True when connections use TLS.
    pub fn uses_tls(&self) -> bool {
        self.topology.uses_tls()
    }

    /// True for a Redis Cluster (keys live on the node that owns their slot).
    pub fn is_cluster(&self) -> bool {
        matches!(self.topology, Topology::Cluster { .. })
    }

    fn certificates(&self) -> Option<TlsCertificates> {
        let t = self.tls.as_ref()?;
        if t.ca.is_none() && t.cert.is_none() {
            return None;
        }
        Some(TlsCertificates {
            client_tls: match (&t.cert, &t.key) {
                (Some(c), Some(k)) => Some(ClientTlsConfig {
                    client_cert: c.expose().as_bytes().to_vec(),
                    client_key: k.expose().as_bytes().to_vec(),
                }),
                _ => None,
            },
            root_cert: t.ca.as_ref().map(|c| c.expose().as_bytes().to_vec()),
        })
    }

    /// A client for one URL, with the protocol, the TLS material and (for
    /// `servername`) the host to verify; plus the resolver that maps that
    /// name back to the URL's host.
    async fn url_client(
        &self,
        url: &str,
        protocol: ProtocolVersion,
    ) -> RedisResult<(Client, Option<PinnedResolver>)> {
        let mut info: ConnectionInfo = url.into_connection_info()?;
        let settings = info.redis_settings().clone().set_protocol(protocol);
        info = info.set_redis_settings(settings);
        let mut resolver = None;
        if let (Some(name), ConnectionAddr::TcpTls { host, port, .. }) = (
            self.tls.as_ref().and_then(|t| t.servername.clone()),
            info.addr().clone(),
        ) {
            let target: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect();
            info = info.set_addr(ConnectionAddr::TcpTls {
                host: name.clone(),
                port,
                insecure: false,
                tls_params: None,
            });
            resolver = Some(PinnedResolver { name, target });
        }
        let client = match self.certificates() {
            Some(certs) => Client::build_with_tls(info, certs)?,
            None => Client::open(info)?,
        };
        Ok((client, resolver))
    }

    /// Opens one connection with `config` (its push sender, timeouts) and
    /// `protocol`: to the server; to the master the sentinels name now (its
    /// address is returned too, for [`RedisTarget::current_master`]); or to
    /// the first cluster node that answers. The error is the last attempt's.
    pub async fn connect(
        &self,
        config: AsyncConnectionConfig,
        protocol: ProtocolVersion,
    ) -> RedisResult<(MultiplexedConnection, Option<(String, u16)>)> {
        match &self.topology {
            Topology::Server { url } => {
                let (client, resolver) = self.url_client(url.expose(), protocol).await?;
                let config = match resolver {
                    Some(r) => config.set_dns_resolver(r),
                    None => config,
                };
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok((conn, None))
            }
            Topology::Cluster { nodes } => {
                let mut last = None;
                // From a random node onwards, so a fleet with one node list
                // does not put every subscription on its first node.
                let start = rand::random_range(0..nodes.len());
                let seeds = nodes.iter().cycle().skip(start).take(nodes.len()).cloned();
                let learned: Vec<Secret> = self
                    .learned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .filter(|l| !nodes.contains(l))
                    .cloned()
                    .collect();
                for node in seeds.chain(learned) {
                    let attempt = async {
                        let (client, resolver) = self.url_client(node.expose(), protocol).await?;
                        let config = match resolver {
                            Some(r) => config.clone().set_dns_resolver(r),
                            None => config.clone(),
                        };
                        client
                            .get_multiplexed_async_connection_with_config(&config)
                            .await
                    };
                    match attempt.await {
                        Ok(mut conn) => {
                            self.learn_nodes(&mut conn, node.expose()).await;
                            return Ok((conn, None));
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    RedisError::from((redis::ErrorKind::InvalidClientConfig, "no cluster node"))
                }))
            }
            Topology::Sentinel { .. } => {
                let client = self.sentinel_client(protocol)?.async_get_client().await?;
                let master = match client.get_connection_info().addr() {
                    ConnectionAddr::Tcp(h, p)
                    | ConnectionAddr::TcpTls {
                        host: h, port: p, ..
                    } => Some((h.clone(), *p)),
                    _ => None,
                };
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok((conn, master))
            }
        }
    }

    /// With Cluster: opens a connection to the node at `addr` (`host:port`,
    /// as a `MOVED` redirection names it), with the seeds' scheme,
    /// credentials and TLS material. Other topologies connect as
    /// [`RedisTarget::connect`] does.
    pub async fn connect_node(
        &self,
        addr: &str,
        config: AsyncConnectionConfig,
        protocol: ProtocolVersion,
    ) -> RedisResult<MultiplexedConnection> {
        let Topology::Cluster { nodes } = &self.topology else {
            return Ok(self.connect(config, protocol).await?.0);
        };
        let bad = || RedisError::from((redis::ErrorKind::InvalidClientConfig, "bad redirect"));
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let seed = nodes.first().ok_or_else(bad)?;
        let mut u = url::Url::parse(seed.expose()).map_err(|_| bad())?;
        u.set_host(Some(host)).map_err(|_| bad())?;
        u.set_port(Some(port)).map_err(|_| bad())?;
        let (client, resolver) = self.url_client(u.as_str(), protocol).await?;
        let config = match resolver {
            Some(r) => config.set_dns_resolver(r),
            None => config,
        };
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Remembers the cluster's other nodes (`CLUSTER NODES` on `conn`, which
    /// was opened with `seed`): their URLs are `seed` with their host and
    /// port. Nodes marked failed or without an address are left out; an error
    /// keeps what was learned before.
    async fn learn_nodes(&self, conn: &mut MultiplexedConnection, seed: &str) {
        let Ok(text) = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async::<String>(conn)
            .await
        else {
            return;
        };
        let Ok(base) = url::Url::parse(seed) else {
            return;
        };
        let mut found = Vec::new();
        for line in text.lines() {
            let mut fields = line.split(' ');
            let (Some(_id), Some(addr), Some(flags)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if flags.contains("fail") || flags.contains("noaddr") || flags.contains("handshake") {
                continue;
            }
            // ip:port@cport[,hostname]
            let hostport = addr.split('@').next().unwrap_or("");
            let Some((host, port)) = hostport.rsplit_once(':') else {
                continue;
            };
            let (Ok(port), false) = (port.parse::<u16>(), host.is_empty()) else {
                continue;
            };
            let mut u = base.clone();
            if u.set_host(Some(host)).is_ok() && u.set_port(Some(port)).is_ok() {
                found.push(Secret::new(u.to_string()));
            }
        }
        if !found.is_empty() {
            *self.learned.lock().unwrap_or_else(|p| p.into_inner()) = found;
        }
    }

    /// The redis crate's sentinel client for this target.
    fn sentinel_client(&self, protocol: ProtocolVersion) -> RedisResult<SentinelClient> {
        let Topology::Sentinel {
            sentinels,
            master_name,
            username,
            password,
            sentinel_password,
            db,
            tls,
        } = &self.topology
        else {
            return Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "not a sentinel target",
            )));
        };
        let addrs = sentinels.iter().map(|(h, p)| {
            if *tls {
                ConnectionAddr::TcpTls {
                    host: h.clone(),
                    port: *p,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(h.clone(), *p)
            }
        });
        let mut b =
            SentinelClientBuilder::new(addrs, master_name.clone(), SentinelServerType::Master)?
                .set_client_to_redis_protocol(protocol)
                .set_client_to_redis_db(*db);
        if let Some(u) = username {
            b = b.set_client_to_redis_username(u);
        }
        if let Some(p) = password {
            b = b.set_client_to_redis_password(p.expose());
        }
        if let Some(p) = sentinel_password {
            b = b.set_client_to_sentinel_password(p.expose());
        }
        if *tls {
            b = b
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(TlsMode::Secure);
            if let Some(certs) = self.certificates() {
                b = b
                    .set_client_to_redis_certificates(certs.clone())
                    .set_client_to_sentinel_certificates(certs);
            }
        }
        b.build()
    }

    /// With Sentinel: the master's address as the sentinels name it now (the
    /// first sentinel that answers). `None` for other targets.
    ///
    /// A graceful failover promotes the replica at once but may leave the old
    /// master serving its clients for seconds before Sentinel reconfigures
    /// it; a client that compares this with the address it is connected to
    /// follows the failover within one check.
    pub async fn current_master(&self) -> RedisResult<Option<(String, u16)>> {
        let Topology::Sentinel { master_name, .. } = &self.topology else {
            return Ok(None);
        };
        let sentinel = self
            .sentinel_client(ProtocolVersion::RESP2)?
            .async_get_sentinel_client()
            .await?;
        let mut conn = sentinel.get_multiplexed_async_connection().await?;
        let (host, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(master_name)
            .query_async(&mut conn)
            .await?;
        Ok(Some((host, port)))
    }

    /// A description of `e` that holds no secret and says when it is TLS.
    pub fn describe_error(&self, e: &RedisError) -> String {
        describe(e, self.uses_tls())
    }
}

fn server(url: &str, option: &str) -> Result<(Topology, String)> {
    let redacted = check_redis_url(url, option)?;
    Ok((
        Topology::Server {
            url: Secret::new(url),
        },
        redacted,
    ))
}

fn sentinel_target(v: Option<&Value>) -> Result<(Topology, String)> {
    let t = parse_sentinel(v.unwrap_or(&Value::Null))?;
    let described = match &t {
        Topology::Sentinel {
            sentinels,
            master_name,
            ..
        } => format!(
            "sentinel master {master_name} via {}",
            sentinels
                .iter()
                .map(|(h, p)| format!("{h}:{p}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
        _ => String::new(),
    };
    Ok((t, described))
}

fn cluster_target(v: Option<&Value>) -> Result<(Topology, String)> {
    let (t, redacted) = parse_cluster(v.unwrap_or(&Value::Null))?;
    let described = format!(
        "cluster via {} ({} nodes listed)",
        redacted[0],
        redacted.len()
    );
    Ok((t, described))
}

fn from_env(env_get: &dyn Fn(&str) -> Option<String>) -> Result<(Topology, String)> {
    if let Some(u) = env_get("REDIS_URL") {
        return server(&u, "redisUrl");
    }
    if let Some(list) = env_get("REDIS_SENTINELS") {
        let sentinels: Vec<Value> = list
            .split(',')
            .map(|s| Value::String(s.trim().to_owned()))
            .collect();
        let mut m = Map::new();
        m.insert("sentinels".into(), Value::Array(sentinels));
        if let Some(name) = env_get("REDIS_SENTINEL_MASTER") {
            m.insert("masterName".into(), Value::String(name));
        }
        if let Some(pw) = env_get("REDIS_PASSWORD") {
            m.insert("password".into(), Value::String(pw));
        }
        return sentinel_target(Some(&Value::Object(m)));
    }
    if let Some(list) = env_get("REDIS_CLUSTER_NODES") {
        let nodes: Vec<Value> = list
            .split(',')
            .map(|s| Value::String(s.trim().to_owned()))
            .collect();
        let mut m = Map::new();
        m.insert("nodes".into(), Value::Array(nodes));
        return cluster_target(Some(&Value::Object(m)));
    }
    let url = url_from_parts(env_get)?;
    server(&url, "redisUrl")
}

fn url_from_parts(env_get: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    let host = env_get("REDIS_HOST").unwrap_or_else(|| "127.0.0.1".into());
    let port = env_get("REDIS_PORT").unwrap_or_else(|| "6379".into());
    if port.parse::<u16>().map(|p| p == 0).unwrap_or(true) {
        return Err(CoreError::option_range(
            "redisUrl",
            "a valid URL (REDIS_PORT is not a port number)",
        ));
    }
    let mut u = url::Url::parse("redis://placeholder")
        .map_err(|_| CoreError::option_range("redisUrl", "a valid URL"))?;
    u.set_host(Some(&host)).map_err(|_| {
        CoreError::option_range("redisUrl", "a valid URL (REDIS_HOST is not a host)")
    })?;
    let _ = u.set_port(port.parse().ok());
    if let Some(user) = env_get("REDIS_USERNAME") {
        let _ = u.set_username(&user);
    }
    if let Some(pw) = env_get("REDIS_PASSWORD") {
        let _ = u.set_password(Some(&pw));
    }
    Ok(u.to_string())
}

/// A description of a Redis error without the URL (which may hold a
/// password); with TLS on, a handshake failure is named as one.
pub fn describe(e: &RedisError, tls: bool) -> String {
    let text = e.to_string();
    if tls {
        // Categories from rustls' messages; the text itself is not passed on.
        let tls_reason = [
            (
                "not valid for name",
                "the server's certificate does not match its name",
            ),
            (
                "certificate expired",
                "the server's certificate has expired",
            ),
            (
                "UnknownIssuer",
                "the server's certificate is not signed by a trusted CA",
            ),
            (
                "NotValidForName",
                "the server's certificate does not match its name",
            ),
            ("Expired", "the server's certificate has expired"),
            ("NotValidYet", "the server's certificate is not valid yet"),
            (
                "CertificateRequired",
                "the server requires a client certificate",
            ),
            (
                "BadCertificate",
                "the server refused the client certificate",
            ),
            (
                "UnknownCA",
                "the server does not trust the client certificate",
            ),
            ("InvalidContentType", "the server does not speak TLS"),
            ("CorruptMessage", "the server does not speak TLS"),
            ("corrupt message", "the server does not speak TLS"),
            ("HandshakeFailure", "the handshake failed"),
            (
                "invalid peer certificate",
                "the server's certificate was refused",
            ),
            ("received fatal alert", "the server refused the handshake"),
        ]
        .iter()
        .find(|(needle, _)| text.contains(needle))
        .map(|(_, what)| *what);
        if let Some(what) = tls_reason {
            return format!("TLS handshake failed: {what}");
        }
    }
    if e.is_connection_refusal() {
        "connection refused".into()
    } else if e.is_timeout() {
        if tls {
            "timed out (TLS)".into()
        } else {
            "timed out".into()
        }
    } else if e.kind() == redis::ErrorKind::AuthenticationFailed {
        "authentication failed".into()
    } else if tls && e.is_io_error() {
        "TLS connection failed (I/O error during or after the handshake)".into()
    } else {
        format!("{:?}", e.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<RedisTarget> {
        RedisTarget::from_options(v.as_object().unwrap(), &HashMap::new())
    }

    #[test]
    fn exactly_one_topology() {
        let e = parse(
            json!({ "redisUrl": "redis://h:1", "redisCluster": { "nodes": ["redis://h:2"] } }),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("`redisUrl` and `redisCluster`"),
            "{e}"
        );
        assert!(parse(json!({ "redisUrl": "redis://h:1" })).is_ok());
        assert_eq!(
            parse(json!({})).unwrap().describe(),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn sentinel_and_cluster_options_are_validated_by_name() {
        let cases = [
            (
                json!({ "redisSentinel": { "masterName": "m" } }),
                "redisSentinel.sentinels",
            ),
            (
                json!({ "redisSentinel": { "sentinels": [], "masterName": "m" } }),
                "redisSentinel.sentinels",
            ),
            (
                json!({ "redisSentinel": { "sentinels": ["h"], "masterName": "m" } }),
                "redisSentinel.sentinels",
            ),
            (
                json!({ "redisSentinel": { "sentinels": ["h:1"] } }),
                "redisSentinel.masterName",
            ),
            (
                json!({ "redisSentinel": { "sentinels": ["h:1"], "masterName": "m", "x": 1 } }),
                "redisSentinel.x",
            ),
            (
                json!({ "redisCluster": { "nodes": [] } }),
                "redisCluster.nodes",
            ),
            (
                json!({ "redisCluster": { "nodes": ["http://h:1"] } }),
                "redisCluster.nodes",
            ),
            (
                json!({ "redisUrl": "redis://h:1", "redisTls": { "servername": "h" } }),
                "redisTls",
            ),
            (
                json!({ "redisUrl": "rediss://h:1", "redisTls": { "ca": "not pem" } }),
                "redisTls.ca",
            ),
            (
                json!({ "redisUrl": "rediss://h:1", "redisTls": { "cert": "-----BEGIN C" } }),
                "redisTls.cert",
            ),
            (
                json!({ "redisSentinel": { "sentinels": ["u:pw@h:1"], "masterName": "m" } }),
                "redisSentinel.sentinels",
            ),
        ];
        for (opts, name) in cases {
            let e = parse(opts.clone()).unwrap_err();
            assert!(e.to_string().contains(&format!("`{name}`")), "{opts}: {e}");
        }
        let s = parse(json!({ "redisSentinel": { "sentinels": ["127.0.0.1:26379", "[::1]:26380"], "masterName": "m", "password": "pw" } })).unwrap();
        assert_eq!(
            s.describe(),
            "sentinel master m via 127.0.0.1:26379,::1:26380"
        );
        assert!(
            !format!("{s:?}").contains("pw"),
            "secrets are redacted in Debug"
        );
    }

    #[test]
    fn secrets_never_in_errors_or_descriptions() {
        let e = parse(
            json!({ "redisCluster": { "nodes": ["redis://u:hunter2@h:1", "nope://u:hunter2@h"] } }),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let c = parse(json!({ "redisCluster": { "nodes": ["redis://u:hunter2@h:1"] } })).unwrap();
        assert!(!c.describe().contains("hunter2"), "{}", c.describe());
    }

    #[test]
    fn environment_fallbacks() {
        let env: HashMap<String, String> = [
            (
                "REDIS_SENTINELS".to_string(),
                "10.0.0.1:26379, 10.0.0.2:26379".to_string(),
            ),
            ("REDIS_SENTINEL_MASTER".to_string(), "mymaster".to_string()),
        ]
        .into();
        let t = RedisTarget::from_options(&Map::new(), &env).unwrap();
        assert!(
            t.describe().starts_with("sentinel master mymaster"),
            "{}",
            t.describe()
        );
        let env: HashMap<String, String> = [(
            "REDIS_CLUSTER_NODES".to_string(),
            "redis://a:1,redis://b:2".to_string(),
        )]
        .into();
        let t = RedisTarget::from_options(&Map::new(), &env).unwrap();
        assert!(
            t.describe().starts_with("cluster via redis://a:1"),
            "{}",
            t.describe()
        );
    }
}
