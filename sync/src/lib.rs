//! Barman knowledge: configuration, catalog, sync-info and the passive node.
