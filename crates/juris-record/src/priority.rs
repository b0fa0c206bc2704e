//! Lowering the CPU priority of the threads that write evidence.
//!
//! The spool writer and the audit chain's writer batch their work and let
//! it wait (group commits, periodic syncs), while a session waits for
//! every microsecond its relay spends. On cores shared with the sessions
//! (and, on small machines, with the database itself) an evidence thread
//! that wakes preempts a relay in the middle of a transaction; at a
//! higher nice value it runs in the gaps instead. The scheduler still
//! gives it a share of a busy core in proportion to its weight, so it is
//! slowed, never stopped.

/// Raise the calling thread's nice value by `nice` (Linux keeps one per
/// thread), at most to 19: relative to what the thread inherited, so a
/// node started under `nice` keeps its evidence threads below its
/// sessions, and never asks for a priority it may not take (lowering one
/// needs no privilege). 0 leaves the thread as it is.
pub fn lower_current_thread(nice: i32) -> std::io::Result<()> {
    if nice == 0 {
        return Ok(());
    }
    // `None` is the caller: on Linux, the calling thread alone.
    let current = rustix::process::getpriority_process(None)?;
    let lowered = current.saturating_add(nice).min(19);
    rustix::process::setpriority_process(None, lowered).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_calling_thread_is_lowered() {
        let before = rustix::process::getpriority_process(None).unwrap();
        let lowered = std::thread::spawn(|| {
            lower_current_thread(7).unwrap();
            rustix::process::getpriority_process(None).unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (before + 7).min(19));
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), before);
    }
}
