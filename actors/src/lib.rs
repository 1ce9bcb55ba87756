//! fleet-actors: the types every side of fleet shares, and the in-process worker actors.
//!
//! * the worker protocol: [`WorkerId`], [`NodeId`], [`Job`], [`SchedulingSpec`], [`Strategy`],
//!   [`WorkerKind`], [`CallOptions`], [`Payload`] and the one error type [`FleetError`];
//! * engines: the [`Engine`] trait, called by method name with serialized arguments, and the
//!   [`EngineRegistry`] a program fills at start-up (no dynamic code loading);
//! * the [`rpc_server`] actor that hosts named engines and runs their calls one at a time on a
//!   thread of its own, while health and status stay answered at once.
//!
//! The crate sits at the bottom of the dependency graph (`launcher -> actors`,
//! `runtime -> actors, launcher`): everything that crosses a process boundary is defined here,
//! serializable with serde + bincode.

pub mod engine;
pub mod error;
pub mod http_call;
pub mod ids;
pub mod options;
pub mod payload;
pub mod rpc_server;
pub mod spec;
pub mod wire;

pub use engine::{Engine, EngineCall, EngineError, EngineInit, EngineRegistry};
pub use error::FleetError;
pub use http_call::{HttpCall, HttpReply, HttpResponseData};
pub use ids::{NodeId, RequestId, WorkerId};
pub use options::{CallOptions, Retry};
pub use payload::{Codec, Payload};
pub use spec::{
    AgentSpec, Backend, CallProtocol, HttpServiceSpec, Isolation, Job, Liveness, PoolServer,
    Readiness, RestartPolicy, RolloutSpec, RpcServerSpec, SchedulingSpec, Strategy, WorkerKind,
};

/// Result type of every fleet operation.
pub type FleetResult<T> = Result<T, FleetError>;
