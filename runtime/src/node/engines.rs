//! The engines every fleet node registers by type name: the built-in ones (`counter`, `echo`,
//! `sleep`), the object store's engine, the simulated trainer (`sim-trainer`) and the GRPO trainer
//! (`grpo-trainer`: `fleet_policy::engine` with its weights put into the store,
//! [`crate::weights::grpo_trainer`]). A program
//! embedding fleet adds its own to the same registry.

use fleet_actors::EngineRegistry;

/// A registry with every engine a node knows.
pub fn registry() -> EngineRegistry {
    let mut r = fleet_actors::engine::builtin::registry();
    crate::store::engine::register(&mut r);
    crate::weights::trainer::register(&mut r);
    crate::weights::grpo_trainer::register(&mut r);
    r
}
