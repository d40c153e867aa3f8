//! Catching a panic as an error, without the panic hook's noise.
//!
//! Why: redb trusts its file; some damaged pages make it index out of
//! bounds, unwrap invalid UTF-8 or hit `unreachable!` instead of returning
//! an error. At start-up that must be the same clear "database is corrupt"
//! error as any other damage, not a backtrace followed by a second message.
//!
//! [`catch`] installs, once per process, a panic hook that stays silent for
//! panics on a thread inside [`catch`] (keeping their message for the
//! error) and hands every other panic to the hook installed before it.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// True while this thread runs inside [`catch`].
    static QUIET: Cell<bool> = const { Cell::new(false) };
    /// The message of the last quiet panic on this thread.
    static MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs the hook once.
static HOOK: Once = Once::new();

/// Runs `f`; a panic inside it is returned as its message instead of
/// unwinding further, and nothing is printed for it. `f` must not be
/// relied on afterwards for state it was changing when it panicked: callers
/// drop what `f` touched.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                let message = payload_text(info.payload());
                MESSAGE.with(|m| *m.borrow_mut() = Some(message));
            } else {
                previous(info);
            }
        }));
    });
    let outer = QUIET.with(|q| q.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(outer));
    result.map_err(|payload| {
        MESSAGE
            .with(|m| m.borrow_mut().take())
            .unwrap_or_else(|| payload_text(&*payload))
    })
}

/// The text of a panic payload (`panic!` gives a `&str` or a `String`).
fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message() {
        assert_eq!(catch(|| 7), Ok(7));
        let caught = catch(|| -> u8 { panic!("page {} is bad", 3) });
        assert_eq!(caught, Err("page 3 is bad".to_string()));
        let nested = catch(|| catch(|| -> u8 { panic!("inner") }));
        assert_eq!(nested, Ok(Err("inner".to_string())));
    }
}
