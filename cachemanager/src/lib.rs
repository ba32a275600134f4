//! cellfs cache manager.
