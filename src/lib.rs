//! Test and benchmark harness for cellfs: starts real fileservers and cache managers.
