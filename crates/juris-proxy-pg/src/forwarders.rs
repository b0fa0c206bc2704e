//! Threads that forward handed-over sessions.
//!
//! A relaying node does almost nothing per message: it reads a TLS record
//! from one socket and writes it to the other. On the node's work-stealing
//! runtime, that little work paid for thread hand-offs: a record that
//! arrived while one worker waited in `epoll_wait` woke the task there and
//! unparked another worker to run it (a futex wake and a context switch
//! per message). Measured on a 2-core machine, scheduling and futexes were
//! about 40 % of the relaying node's CPU.
//!
//! Each forwarder is a thread running a single-threaded runtime: the
//! thread that learns a socket is readable runs the task that reads it,
//! and one `epoll_wait` returns the ready records of all its sessions at
//! once. Sessions are spread over the forwarders round robin.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Single-threaded runtimes, each on its own thread, that run relayed
/// sessions. Dropping this stops them (and the sessions still on them).
pub struct Forwarders {
    runtimes: Vec<Handle>,
    next: AtomicUsize,
    _stop: Vec<oneshot::Sender<()>>,
}

impl Forwarders {
    /// Start `threads` forwarder threads (at least one).
    pub fn start(threads: usize) -> std::io::Result<Self> {
        let mut runtimes = Vec::new();
        let mut stop = Vec::new();
        for index in 0..threads.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtimes.push(runtime.handle().clone());
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            stop.push(stop_tx);
            std::thread::Builder::new()
                .name(format!("juris-forward-{index}"))
                .spawn(move || {
                    // Ends when the sender is dropped; the runtime, and
                    // the sessions left on it, are dropped on this thread.
                    let _ = runtime.block_on(stop_rx);
                })?;
        }
        Ok(Forwarders {
            runtimes,
            next: AtomicUsize::new(0),
            _stop: stop,
        })
    }

    /// Run `session` on the next forwarder.
    pub fn spawn<F>(&self, session: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let at = self.next.fetch_add(1, Ordering::Relaxed) % self.runtimes.len();
        self.runtimes[at].spawn(session)
    }
}
