//! The bulk data plane: an object store on every node.
//!
//! Bytes that must not travel as actor messages (weights, batches, tensors: ractor_cluster
//! drops a whole peer session on a frame over 16 MiB) go through the store of a node. A
//! producer puts a named object and gets an [`ObjectRef`], a few hundred bytes that can be an
//! engine call's argument; a consumer on any node calls [`Store::fetch_to_local`] with it and
//! gets a **path on its own node**: on the object's home node that is the object's own file
//! (no copy), on any other node the store first fetches the object over HTTP into its own
//! directory, streamed in chunks and checked against the checksum while it is written, and
//! renamed into place only once complete and verified. That is the shape weight updates need:
//! an inference server is told to load `update_weights_from_disk {model_path}` from a path on
//! its node.
//!
//! * [`object`] — ids, checksums (XXH3-128: why there), [`ObjectRef`];
//! * [`catalog`] — the budget and lease bookkeeping (pure, unit-tested);
//! * [`files`] — the directory layout, write-then-rename, cleanup of dead nodes' directories;
//! * [`server`] — the hyper 1 server (`GET /v1/objects/{id}`, `GET /v1/stats`), token-checked;
//! * [`fetch`] — the streaming client that fetches into the local store;
//! * [`sweep`] — the TTL sweeper (sleeps until the next deadline; never polls);
//! * [`config`] — directory, budget, listen address, the token derived from the cookie;
//! * [`engine`] — the built-in `store` engine, so a worker can put and fetch without code of
//!   its own (and tests can drive the store on a node process);
//! * [`errors`] — [`StoreError`].
//!
//! **Who starts it.** Every node agent starts its node's store when it starts and stops it (and
//! removes the node's directory) when it stops; the store's port comes from the node's port
//! allocator, so it is claimed host-wide like a worker's. The URL is in every [`ObjectRef`]
//! (no lookup needed to fetch) and in the node's [`crate::node::NodeInfo`] and the head's
//! status, so other nodes can find it.
//!
//! **How engine code reaches it.** Engines are plain synchronous code on an RpcServer worker's
//! thread and are built from an [`fleet_actors::EngineInit`] that has the worker's env, which
//! always has `FLEET_NODE`. The least invasive hand-off is therefore a process-wide table of
//! stores by node id (one logical node per process, but tests may run several in one): an
//! engine calls [`Store::for_engine`]`(init.env)` (or `call.env()`) and gets its node's store,
//! then uses [`Store::blocking`] (waits on a runtime thread, safe from the engine thread) or
//! writes straight into the store with [`Store::writer`]. Nothing in the worker protocol or
//! the engine trait changes. Isolated RpcServers (`fleet rpc-server` child processes) have no
//! store in their process; they are not covered yet.

pub mod catalog;
pub mod config;
pub mod engine;
pub mod errors;
pub mod fetch;
pub mod files;
pub mod logs_route;
pub mod object;
pub mod server;
pub mod sweep;

pub use catalog::StoreStats;
pub use config::StoreConfig;
pub use errors::StoreError;
pub use files::ObjectWriter;
pub use object::{Checksum, ObjectId, ObjectRef};

use catalog::Catalog;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// How a put is held: by whom, and for how long.
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    /// Who puts it (default `driver`).
    pub owner: Option<String>,
    /// Remove it this long after the put unless renewed (default: until deleted or the node
    /// stops).
    pub ttl: Option<Duration>,
}

impl PutOptions {
    /// Held by `owner`.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }
    /// With a TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
    fn owner_name(&self) -> String {
        self.owner.clone().unwrap_or_else(|| "driver".into())
    }
}

/// The shared state of one node's store.
pub(crate) struct Inner {
    pub(crate) node: String,
    pub(crate) dir: PathBuf,
    pub(crate) url: String,
    pub(crate) token: String,
    pub(crate) chunk: usize,
    catalog: Mutex<Catalog>,
    pub(crate) sweep_wake: tokio::sync::Notify,
    pub(crate) client: fetch::HttpClient,
    fetch_locks: Mutex<HashMap<ObjectId, Arc<tokio::sync::Mutex<()>>>>,
    runtime: tokio::runtime::Handle,
    pub(crate) stop: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("node", &self.node)
            .field("dir", &self.dir)
            .field("url", &self.url)
            .finish()
    }
}

impl Inner {
    pub(crate) fn catalog(&self) -> MutexGuard<'_, Catalog> {
        self.catalog.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn object_path(&self, id: &ObjectId) -> PathBuf {
        self.dir.join("objects").join(id.to_string())
    }

    pub(crate) fn check_open(&self, what: &str) -> Result<(), StoreError> {
        if *self.stop.borrow() {
            return Err(StoreError::NoStore {
                what: what.to_string(),
                detail: format!("the store of node {} has been shut down", self.node),
            });
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) {
        if let Err(e) = std::fs::remove_file(path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove an object file");
            }
        }
    }
}

/// A node's object store (cheap to clone; every clone is the same store).
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

fn registry() -> &'static Mutex<HashMap<String, Store>> {
    static STORES: OnceLock<Mutex<HashMap<String, Store>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

impl Store {
    /// Starts the store of `node`: creates its directory (removing those of dead node
    /// processes), binds its HTTP server, starts its sweeper and enters it in the process-wide
    /// table [`Store::for_node`] reads.
    pub async fn start(node: &str, cfg: StoreConfig) -> Result<Store, StoreError> {
        let root = cfg.root();
        files::remove_stale_dirs(&root);
        let dir = files::create_node_dir(&root, node)?;
        let budget = cfg.budget.unwrap_or_else(|| config::default_budget(&root));
        let listener = tokio::net::TcpListener::bind((cfg.listen_ip, cfg.port.unwrap_or(0)))
            .await
            .map_err(|e| {
                let in_use = e.kind() == std::io::ErrorKind::AddrInUse;
                StoreError::Bind {
                    addr: format!("{}:{}", cfg.listen_ip, cfg.port.unwrap_or(0)),
                    detail: e.to_string(),
                    in_use,
                    hint: if in_use {
                        "another socket holds that port; give the node a port range (--port-range) outside the kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range), or a free StoreConfig::port"
                    } else {
                        "check that the address is one of this machine's (--listen)"
                    },
                }
            })?;
        let port = listener
            .local_addr()
            .map_err(|e| StoreError::io("reading the bound address", &dir, e))?
            .port();
        let url = format!("http://{}:{port}", cfg.host());
        let mut catalog = Catalog::new(node, budget);
        catalog.stats.url = url.clone();
        catalog.stats.dir = dir.display().to_string();
        let (stop, _) = tokio::sync::watch::channel(false);
        let inner = Arc::new(Inner {
            node: node.to_string(),
            dir,
            url,
            token: cfg.token,
            chunk: cfg.chunk.clamp(64 << 10, 64 << 20),
            catalog: Mutex::new(catalog),
            sweep_wake: tokio::sync::Notify::new(),
            client: fetch::client(),
            fetch_locks: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
            stop,
        });
        server::spawn(listener, inner.clone());
        sweep::spawn(inner.clone());
        let store = Store { inner };
        registry()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_string(), store.clone());
        tracing::info!(node, url = %store.inner.url, dir = %store.inner.dir.display(), budget, "object store started");
        Ok(store)
    }

    /// The store of `node` in this process, if it runs one.
    pub fn for_node(node: &str) -> Option<Store> {
        registry()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .cloned()
    }

    /// The store of the node an engine runs on, from the worker env it was given
    /// (`EngineInit::env` or `EngineCall::env`, which carry `FLEET_NODE`).
    pub fn for_engine(env: &BTreeMap<String, String>) -> Result<Store, StoreError> {
        let node = env.get("FLEET_NODE").ok_or_else(|| StoreError::NoStore {
            what: "this engine".into(),
            detail: "its env has no FLEET_NODE (is it hosted by a fleet worker?)".into(),
        })?;
        Store::for_node(node).ok_or_else(|| StoreError::NoStore {
            what: format!("node {node}"),
            detail: "this process runs no store for it (an isolated rpc-server child, or a node started with the store disabled)".into(),
        })
    }

    /// The node this store belongs to.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Its base URL, `http://HOST:PORT`.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Its directory (`<root>/<node>`).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The token its server expects (derived from the cluster cookie).
    pub fn token(&self) -> &str {
        &self.inner.token
    }

    /// A writer for a new object of (at most) `size_hint` bytes if known: write into it
    /// (`std::io::Write`), then [`ObjectWriter::commit`]. For synchronous code such as an
    /// engine that produces weights: the bytes go straight into the store's file.
    pub fn writer(
        &self,
        name: &str,
        size_hint: Option<u64>,
        opts: &PutOptions,
    ) -> Result<ObjectWriter, StoreError> {
        check_name(name)?;
        ObjectWriter::create(
            self.inner.clone(),
            files::Target::New {
                name: name.to_string(),
                owner: opts.owner_name(),
            },
            size_hint,
            opts.ttl,
        )
    }

    /// Puts `bytes` as a new object.
    pub async fn put_bytes(
        &self,
        name: &str,
        bytes: impl Into<bytes::Bytes>,
        opts: &PutOptions,
    ) -> Result<ObjectRef, StoreError> {
        let bytes = bytes.into();
        let mut w = self.writer(name, Some(bytes.len() as u64), opts)?;
        self.blocking_io(move || {
            w.write_chunk(&bytes)?;
            w.commit().map(|(o, _)| o)
        })
        .await
    }

    /// Puts a copy of the file at `path` as a new object (the file is read in chunks, never
    /// whole; it stays where it is).
    pub async fn put_file(
        &self,
        name: &str,
        path: impl AsRef<Path>,
        opts: &PutOptions,
    ) -> Result<ObjectRef, StoreError> {
        use std::io::Read;
        let path = path.as_ref().to_path_buf();
        let size = std::fs::metadata(&path)
            .map_err(|e| StoreError::BadRequest {
                what: format!("putting {}", path.display()),
                detail: format!("cannot read it: {e}"),
            })?
            .len();
        let mut w = self.writer(name, Some(size), opts)?;
        let chunk = self.inner.chunk;
        self.blocking_io(move || {
            let mut f = std::fs::File::open(&path).map_err(|e| StoreError::BadRequest {
                what: format!("putting {}", path.display()),
                detail: format!("cannot open it: {e}"),
            })?;
            let mut buf = vec![0u8; chunk];
            loop {
                let n = f.read(&mut buf).map_err(|e| StoreError::BadRequest {
                    what: format!("putting {}", path.display()),
                    detail: format!("reading it failed: {e}"),
                })?;
                if n == 0 {
                    break;
                }
                w.write_chunk(&buf[..n])?;
            }
            w.commit().map(|(o, _)| o)
        })
        .await
    }

    /// Puts everything `reader` yields as a new object, chunk by chunk (never whole in memory;
    /// the budget is checked as it grows).
    pub async fn put_stream<R>(
        &self,
        name: &str,
        mut reader: R,
        size_hint: Option<u64>,
        opts: &PutOptions,
    ) -> Result<ObjectRef, StoreError>
    where
        R: tokio::io::AsyncRead + Unpin,
    {
        use tokio::io::AsyncReadExt;
        let w = self.writer(name, size_hint, opts)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<fetch::Piece>(4);
        let sink = fetch::spawn_sink(w, rx);
        let chunk = self.inner.chunk;
        let what = format!("reading the stream for object {name:?}");
        loop {
            let mut buf = bytes::BytesMut::with_capacity(chunk);
            let n = reader
                .read_buf(&mut buf)
                .await
                .map_err(|e| StoreError::BadRequest {
                    what: what.clone(),
                    detail: e.to_string(),
                })?;
            if n == 0 {
                break;
            }
            if tx.send(fetch::Piece::Chunk(buf.freeze())).await.is_err() {
                break;
            }
        }
        let _ = tx.send(fetch::Piece::Done).await;
        drop(tx);
        fetch::join_sink(sink, &self.inner).await.map(|(o, _)| o)
    }

    /// A path to the object on **this** node: its own file when it is here (no copy, whatever
    /// its home), else fetched from its home store into this one first (streamed, checked,
    /// renamed into place when complete). A copy is held by this node's store like any object
    /// (counts against its budget, removed with [`Store::delete`] or when `ttl` runs out).
    pub async fn fetch_to_local(
        &self,
        obj: &ObjectRef,
        ttl: Option<Duration>,
    ) -> Result<PathBuf, StoreError> {
        self.inner.check_open("fetching an object")?;
        if let Some(p) = self.local_path(&obj.id) {
            return Ok(p);
        }
        // One fetch per id at a time on this node: a second caller waits and gets the path.
        let lock = {
            let mut locks = self
                .inner
                .fetch_locks
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            locks.entry(obj.id).or_default().clone()
        };
        let _held = lock.lock().await;
        let r = match self.local_path(&obj.id) {
            Some(p) => Ok(p),
            None => fetch::fetch_into(&self.inner, obj, ttl).await,
        };
        self.inner
            .fetch_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&obj.id);
        r
    }

    fn local_path(&self, id: &ObjectId) -> Option<PathBuf> {
        let mut c = self.inner.catalog();
        let p = c.get(id).map(|e| e.path.clone())?;
        c.stats.local_hits += 1;
        Some(p)
    }

    /// The reference of an object held here (put here, or a fetched copy).
    pub fn get(&self, id: &ObjectId) -> Option<ObjectRef> {
        self.inner.catalog().get(id).map(|e| e.obj.clone())
    }

    /// Deletes an object from this node's store (its file goes; readers that have it open
    /// keep reading). Returns whether it was here.
    pub fn delete(&self, id: &ObjectId) -> bool {
        let gone = {
            let mut c = self.inner.catalog();
            let e = c.remove(id);
            if e.is_some() {
                c.stats.deletes += 1;
            }
            e
        };
        match gone {
            Some(e) => {
                self.inner.remove_file(&e.path);
                true
            }
            None => false,
        }
    }

    /// Sets an object's lease to end `ttl` from now (`None`: until deleted).
    pub fn renew(&self, id: &ObjectId, ttl: Option<Duration>) -> Result<(), StoreError> {
        self.inner
            .catalog()
            .renew(id, ttl, std::time::Instant::now())?;
        self.inner.sweep_wake.notify_one();
        Ok(())
    }

    /// Counters and levels.
    pub fn stats(&self) -> StoreStats {
        self.inner.catalog().stats()
    }

    /// The same store for synchronous callers (engine threads): each call waits for the
    /// operation, which runs on the store's runtime. Never call it from an async task.
    pub fn blocking(&self) -> BlockingStore {
        BlockingStore {
            store: self.clone(),
        }
    }

    /// Stops serving, removes every object and the node's directory, and leaves the
    /// process-wide table. Idempotent.
    pub fn shutdown(&self) {
        if self.inner.stop.send_replace(true) {
            return;
        }
        {
            let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
            if reg
                .get(&self.inner.node)
                .is_some_and(|s| Arc::ptr_eq(&s.inner, &self.inner))
            {
                reg.remove(&self.inner.node);
            }
        }
        self.inner.catalog().drain();
        if let Err(e) = std::fs::remove_dir_all(&self.inner.dir) {
            tracing::warn!(dir = %self.inner.dir.display(), error = %e, "cannot remove the store directory");
        }
        tracing::info!(node = %self.inner.node, "object store stopped");
    }

    async fn blocking_io<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| StoreError::Io {
                what: "a store write".into(),
                dir: self.inner.dir.display().to_string(),
                detail: format!("its thread panicked: {e}"),
            })?
    }
}

fn check_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(StoreError::BadRequest {
            what: format!("naming an object {name:?}"),
            detail: "a name is 1-256 printable characters".into(),
        });
    }
    Ok(())
}

/// A [`Store`] for synchronous code: see [`Store::blocking`].
#[derive(Clone, Debug)]
pub struct BlockingStore {
    store: Store,
}

impl BlockingStore {
    fn wait<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.store.inner.runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| StoreError::NoStore {
            what: "a blocking store call".into(),
            detail: "the store's runtime stopped".into(),
        })?
    }

    /// [`Store::fetch_to_local`].
    pub fn fetch_to_local(
        &self,
        obj: &ObjectRef,
        ttl: Option<Duration>,
    ) -> Result<PathBuf, StoreError> {
        let (s, o) = (self.store.clone(), obj.clone());
        self.wait(async move { s.fetch_to_local(&o, ttl).await })
    }

    /// [`Store::put_file`].
    pub fn put_file(
        &self,
        name: &str,
        path: &Path,
        opts: &PutOptions,
    ) -> Result<ObjectRef, StoreError> {
        let (s, n, p, o) = (
            self.store.clone(),
            name.to_string(),
            path.to_path_buf(),
            opts.clone(),
        );
        self.wait(async move { s.put_file(&n, &p, &o).await })
    }

    /// [`Store::put_bytes`] (writes on the calling thread).
    pub fn put_bytes(
        &self,
        name: &str,
        bytes: &[u8],
        opts: &PutOptions,
    ) -> Result<ObjectRef, StoreError> {
        let mut w = self.store.writer(name, Some(bytes.len() as u64), opts)?;
        w.write_chunk(bytes)?;
        w.commit().map(|(o, _)| o)
    }

    /// The async store behind this one.
    pub fn store(&self) -> &Store {
        &self.store
    }
}
