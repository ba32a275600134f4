//! cellfs fileserver.
