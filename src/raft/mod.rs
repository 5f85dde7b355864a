//! The replicated store: an openraft group over sled that will hold sessions, tasks,
//! tool state and tenant credentials for the whole fleet.
//!
//! Until it lands, [`crate::store`] keeps the same records on the local node only, behind
//! the session actor's handle, so the HTTP layer does not change when this replaces it.
