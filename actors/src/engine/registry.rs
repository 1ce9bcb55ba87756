//! The table of engine types a node can create, filled by the program at start-up.

use super::{Engine, EngineError, EngineInit};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Builds an engine from its init arguments.
pub type EngineFactory =
    Arc<dyn Fn(&EngineInit) -> Result<Box<dyn Engine>, EngineError> + Send + Sync>;

/// Engine types by name. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct EngineRegistry {
    factories: BTreeMap<String, EngineFactory>,
}

impl std::fmt::Debug for EngineRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineRegistry")
            .field("types", &self.type_names())
            .finish()
    }
}

impl EngineRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `type_name` with a constructor; replaces an earlier registration of the name.
    pub fn register<F, E>(&mut self, type_name: impl Into<String>, make: F) -> &mut Self
    where
        F: Fn(&EngineInit) -> Result<E, EngineError> + Send + Sync + 'static,
        E: Engine,
    {
        self.factories.insert(
            type_name.into(),
            Arc::new(move |init: &EngineInit| make(init).map(|e| Box::new(e) as Box<dyn Engine>)),
        );
        self
    }

    /// Registers an engine built with `Default`, ignoring init arguments.
    pub fn register_default<E: Engine + Default>(
        &mut self,
        type_name: impl Into<String>,
    ) -> &mut Self {
        self.register(type_name, |_init: &EngineInit| Ok(E::default()))
    }

    /// Builder form of [`EngineRegistry::register`].
    pub fn with<F, E>(mut self, type_name: impl Into<String>, make: F) -> Self
    where
        F: Fn(&EngineInit) -> Result<E, EngineError> + Send + Sync + 'static,
        E: Engine,
    {
        self.register(type_name, make);
        self
    }

    /// The factory for `type_name`.
    pub fn get(&self, type_name: &str) -> Option<EngineFactory> {
        self.factories.get(type_name).cloned()
    }

    /// Registered names, sorted.
    pub fn type_names(&self) -> Vec<String> {
        self.factories.keys().cloned().collect()
    }

    /// Adds every type of `other` (its registrations win).
    pub fn merge(&mut self, other: &EngineRegistry) -> &mut Self {
        for (k, v) in &other.factories {
            self.factories.insert(k.clone(), v.clone());
        }
        self
    }
}
