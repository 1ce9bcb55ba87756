//! Engines on workers: creating and configuring them, the worker's environment, and the typed
//! [`EngineHandle`].

use super::Scheduler;
use fleet_actors::engine::Configure;
use fleet_actors::rpc_server::Control;
use fleet_actors::{CallOptions, FleetError, Payload, WorkerId};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

impl Scheduler {
    /// Creates engine `name` of registered type `type_name` on `worker`, with constructor
    /// arguments `args`, waiting up to the default call deadline
    /// (`CallOptions::default().timeout`, 60 s). A duplicate name is an error. An engine whose
    /// constructor takes longer (loading weights) needs [`Scheduler::create_engine_with`].
    pub async fn create_engine<A: Serialize + ?Sized>(
        &self,
        worker: &WorkerId,
        name: &str,
        type_name: &str,
        args: &A,
    ) -> Result<EngineHandle, FleetError> {
        self.create_engine_with(worker, name, type_name, args, &CallOptions::default())
            .await
    }

    /// Like [`Scheduler::create_engine`], waiting up to `opts.timeout` for the constructor (and
    /// the `configure` hook it runs): constructors that load weights take minutes. When the
    /// deadline passes the answer is `Timeout` and the engine may still be being built: a
    /// retry with the same name then gets `EngineExists` once it is.
    pub async fn create_engine_with<A: Serialize + ?Sized>(
        &self,
        worker: &WorkerId,
        name: &str,
        type_name: &str,
        args: &A,
        opts: &CallOptions,
    ) -> Result<EngineHandle, FleetError> {
        let control = Control::CreateEngine {
            name: name.to_string(),
            type_name: type_name.to_string(),
            args: Payload::bincode(args)?,
        };
        self.control(worker, control, opts.timeout).await?;
        Ok(self.engine(worker, name))
    }

    /// Creates the same engine on every worker of `role`, concurrently.
    pub async fn create_engine_on_role<A: Serialize + ?Sized>(
        &self,
        role: &str,
        name: &str,
        type_name: &str,
        args: &A,
    ) -> Result<Vec<EngineHandle>, FleetError> {
        let workers = self.workers(role).await?;
        let futs = workers
            .iter()
            .map(|w| self.create_engine(&w.id, name, type_name, args));
        futures::future::join_all(futs).await.into_iter().collect()
    }

    /// A handle to engine `name` on `worker` (no round trip; errors surface on the first call).
    pub fn engine(&self, worker: &WorkerId, name: &str) -> EngineHandle {
        EngineHandle {
            scheduler: self.clone(),
            worker: worker.clone(),
            engine: name.to_string(),
        }
    }

    /// Passes role, rank and `config` to every engine of every worker of `role` (and to engines
    /// created later). The rank is the worker's index. Waits up to the default call deadline
    /// (`CallOptions::default().timeout`, 60 s); see [`Scheduler::configure_with`].
    pub async fn configure<C: Serialize + ?Sized>(
        &self,
        role: &str,
        config: &C,
    ) -> Result<(), FleetError> {
        self.configure_with(role, config, CallOptions::default().timeout)
            .await
    }

    /// Like [`Scheduler::configure`], waiting up to `timeout` for every worker's `configure`
    /// hooks (each worker runs its hooks on its engine thread, after the calls queued before).
    pub async fn configure_with<C: Serialize + ?Sized>(
        &self,
        role: &str,
        config: &C,
        timeout: Duration,
    ) -> Result<(), FleetError> {
        let config = Payload::bincode(config)?;
        let workers = self.workers(role).await?;
        let futs = workers.iter().map(|w| {
            let cfg = Configure {
                role: role.to_string(),
                rank: w.id.index,
                config: config.clone(),
            };
            self.control(&w.id, Control::Configure(cfg), timeout)
        });
        for r in futures::future::join_all(futs).await {
            r?;
        }
        Ok(())
    }

    /// Merges `env` into the environment of every worker of `role`: engines see it on their next
    /// call and creation, processes forked afterwards inherit it. The node process's own
    /// environment is never changed.
    pub async fn set_worker_env(
        &self,
        role: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<(), FleetError> {
        if let Some(r) = &self.remote {
            let op = crate::attach::protocol::Op::SetWorkerEnv {
                role: role.to_string(),
                env: env.clone(),
            };
            return r.done(op, r.timeout()).await;
        }
        let workers = self.workers(role).await?;
        let futs = workers
            .iter()
            .map(|w| self.control(&w.id, Control::SetEnv(env.clone()), Duration::from_secs(10)));
        for r in futures::future::join_all(futs).await {
            r?;
        }
        let mut st = self.inner.state.lock().await;
        let mut targets = Vec::new();
        if let Some(entry) = st.roles.get_mut(role) {
            for w in entry.workers.iter_mut() {
                w.env.extend(env.clone());
                targets.push(w.alias_of.clone().unwrap_or_else(|| w.id.clone()));
            }
        }
        // Keep every name of the same worker (role and its aliases) in agreement.
        for entry in st.roles.values_mut() {
            for w in entry.workers.iter_mut() {
                let real = w.alias_of.clone().unwrap_or_else(|| w.id.clone());
                if targets.contains(&real) {
                    w.env.extend(env.clone());
                }
            }
        }
        Ok(())
    }
}

/// A named engine on one worker, with typed calls.
#[derive(Clone, Debug)]
pub struct EngineHandle {
    scheduler: Scheduler,
    worker: WorkerId,
    engine: String,
}

impl EngineHandle {
    /// Calls `method` with `req`, returning the typed response.
    pub async fn call<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        method: &str,
        req: &Req,
        opts: &CallOptions,
    ) -> Result<Resp, FleetError> {
        self.scheduler
            .call(&self.worker, &self.engine, method, req, opts)
            .await
    }

    /// The worker.
    pub fn worker(&self) -> &WorkerId {
        &self.worker
    }

    /// The engine's name.
    pub fn name(&self) -> &str {
        &self.engine
    }
}
