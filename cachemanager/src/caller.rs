//! Who the kernel request being served is for. The FUSE layer enters the
//! caller of each request on the thread that serves it; the links read it
//! when they send a request, so the fileserver authorizes that process.
//! Work a node does for itself (revalidation, probes) runs without a
//! caller and is anonymous to the server; fetches finished on other threads
//! (a large file streaming, the parts of a small-file batch read ahead) act
//! for the caller whose open started them.

use cellfs_protocol::acl::Caller;
use std::cell::RefCell;
use std::sync::Arc;

thread_local! {
    static CURRENT: RefCell<Option<Arc<Caller>>> = const { RefCell::new(None) };
}

/// The caller entered on this thread, if any.
pub fn current() -> Option<Arc<Caller>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Restores the previous caller when dropped.
#[must_use = "the caller is left again when the scope is dropped"]
pub struct Scope {
    previous: Option<Arc<Caller>>,
}

impl Drop for Scope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// Makes `caller` this thread's caller until the returned scope is dropped.
pub fn enter(caller: Option<Arc<Caller>>) -> Scope {
    let previous = CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), caller));
    Scope { previous }
}

/// The caller of a kernel request made by `uid` with primary group `gid`.
pub fn of(uid: u32, gid: u32) -> Arc<Caller> {
    Arc::new(Caller { uid, gids: vec![gid] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_restore() {
        assert!(current().is_none());
        {
            let _a = enter(Some(of(33, 33)));
            assert_eq!(current().unwrap().uid, 33);
            {
                let _b = enter(Some(of(1000, 100)));
                assert_eq!(current().unwrap().uid, 1000);
            }
            assert_eq!(current().unwrap().uid, 33);
            let other = std::thread::spawn(current).join().unwrap();
            assert!(other.is_none(), "a caller leaked to another thread");
        }
        assert!(current().is_none());
    }
}
