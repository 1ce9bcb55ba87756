//! The baseline every actor benchmark measures against: an actor that adds to a counter and
//! replies, nothing else. Remotable, so the cross-node benchmark can call it over the same
//! session as fleet's calls; local sends of it are not serialized.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

/// The baseline actor.
pub struct RawCounter;

/// Its protocol.
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum RawMsg {
    /// Add and return the total.
    #[rpc]
    Incr(u64, RpcReplyPort<u64>),
}

impl Actor for RawCounter {
    type Msg = RawMsg;
    type State = u64;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<RawMsg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }
    async fn handle(
        &self,
        _: ActorRef<RawMsg>,
        msg: RawMsg,
        total: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        let RawMsg::Incr(by, port) = msg;
        *total += by;
        let _ = port.send(*total);
        Ok(())
    }
}
