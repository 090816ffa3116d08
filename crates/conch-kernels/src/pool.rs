//! A persistent thread pool for data-parallel loops.
//!
//! Workers are spawned once (lazily, or by [`set_threads`]) and wait for work by spinning
//! briefly and then parking, so the back-to-back calls of a forward pass find them awake.
//! [`parallel_for`] hands out task indices through an atomic counter; the calling thread
//! works too, and returns only when every task has finished. Workers join a loop only while it
//! is open, so a worker the OS has not scheduled yet never delays the caller: the caller closes
//! the loop once every task is claimed and waits only for workers that joined. Dispatch
//! allocates nothing.
//!
//! One loop runs on the pool at a time. A `parallel_for` issued while the pool is busy (from
//! another thread, or from inside a task) runs its tasks on the calling thread instead, so
//! nesting never deadlocks.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long an idle worker spins before parking. Long enough to cover the gap between the
/// matrix products of one layer, short enough not to burn a core between tokens.
const SPIN: Duration = Duration::from_micros(200);

/// The task closure of the loop in flight, with its lifetime erased. Workers dereference it only
/// while joined to the loop, and the caller does not return (so the closure lives) before every
/// joined worker has left.
#[derive(Clone, Copy)]
struct TaskRef(*const (dyn Fn(usize) + Sync));
// SAFETY: the pointee is `Sync`, and the pointer is only used while the closure is alive (see above).
unsafe impl Send for TaskRef {}
unsafe impl Sync for TaskRef {}

struct Shared {
    /// Incremented once per job, to wake workers.
    epoch: AtomicU64,
    job: Mutex<Option<(TaskRef, usize)>>,
    next: AtomicUsize,
    /// [`OPEN`] while workers may join the job, plus the number of workers joined to it.
    state: AtomicUsize,
    panicked: AtomicBool,
}

const OPEN: usize = 1 << (usize::BITS - 1);

impl Shared {
    /// Joins the job if it is still open.
    fn join(&self) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        while s & OPEN != 0 {
            match self
                .state
                .compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
        false
    }
}

struct Worker {
    handle: JoinHandle<()>,
    stop: Arc<AtomicBool>,
}

struct Pool {
    shared: Arc<Shared>,
    workers: Vec<Worker>,
}

fn pool() -> &'static Mutex<Pool> {
    static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            next: AtomicUsize::new(0),
            state: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        });
        let mut pool = Pool {
            shared,
            workers: Vec::new(),
        };
        pool.resize(default_threads());
        Mutex::new(pool)
    })
}

fn default_threads() -> usize {
    std::env::var("CONCH_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()))
}

static THREADS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set while this thread runs pool tasks, so nested loops run inline.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

impl Pool {
    /// Grows or shrinks the worker set to `threads - 1` (the caller is the remaining thread).
    fn resize(&mut self, threads: usize) {
        let threads = threads.max(1);
        while self.workers.len() > threads - 1 {
            let w = self.workers.pop().expect("non-empty");
            w.stop.store(true, Ordering::Release);
            w.handle.thread().unpark();
            // A worker that panicked outside a task has nothing left to clean up.
            let _ = w.handle.join();
        }
        while self.workers.len() < threads - 1 {
            let stop = Arc::new(AtomicBool::new(false));
            let shared = Arc::clone(&self.shared);
            let seen = shared.epoch.load(Ordering::Acquire);
            let worker_stop = Arc::clone(&stop);
            let handle = thread::Builder::new()
                .name(format!("conch-pool-{}", self.workers.len() + 1))
                .spawn(move || worker_loop(&shared, &worker_stop, seen))
                .expect("spawning a pool thread");
            self.workers.push(Worker { handle, stop });
        }
        THREADS.store(threads, Ordering::Relaxed);
    }
}

fn worker_loop(shared: &Shared, stop: &AtomicBool, mut seen: u64) {
    IN_TASK.with(|c| c.set(true));
    loop {
        let started = Instant::now();
        let mut spins = 0u32;
        loop {
            if stop.load(Ordering::Acquire) {
                return;
            }
            if shared.epoch.load(Ordering::Acquire) != seen {
                break;
            }
            spins += 1;
            if spins & 63 == 0 && started.elapsed() > SPIN {
                // `unpark` before `park` makes `park` return at once, so a job published
                // between the check above and here is not missed.
                thread::park();
            } else {
                std::hint::spin_loop();
            }
        }
        seen = shared.epoch.load(Ordering::Acquire);
        if !shared.join() {
            continue;
        }
        let job = *shared.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((task, n_tasks)) = job {
            // SAFETY: the caller keeps the closure alive until every joined worker has left.
            let f = unsafe { &*task.0 };
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_tasks(shared, f, n_tasks)
            }));
            if ok.is_err() {
                shared.panicked.store(true, Ordering::Release);
            }
        }
        shared.state.fetch_sub(1, Ordering::Release);
    }
}

fn run_tasks(shared: &Shared, f: &(dyn Fn(usize) + Sync), n_tasks: usize) {
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= n_tasks {
            return;
        }
        f(i);
    }
}

/// Sets the number of threads loops run on (the calling thread included); at least 1.
/// Waits for a loop in flight to finish.
pub fn set_threads(n: usize) {
    pool().lock().unwrap_or_else(|e| e.into_inner()).resize(n);
}

/// The number of threads loops run on (the calling thread included).
pub fn threads() -> usize {
    let n = THREADS.load(Ordering::Relaxed);
    if n != 0 {
        return n;
    }
    drop(pool().lock());
    THREADS.load(Ordering::Relaxed)
}

/// Runs `f(0..n_tasks)` across the pool and returns when all calls have returned.
/// Tasks run in no particular order, each exactly once. A panic in a task is re-raised here.
pub fn parallel_for<F: Fn(usize) + Sync>(n_tasks: usize, f: F) {
    if n_tasks == 0 {
        return;
    }
    let run_inline = || (0..n_tasks).for_each(&f);
    if n_tasks == 1 || IN_TASK.with(|c| c.get()) {
        return run_inline();
    }
    let guard = match pool().try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return run_inline(),
    };
    if guard.workers.is_empty() {
        drop(guard);
        return run_inline();
    }
    let shared = &guard.shared;
    let dyn_f: &(dyn Fn(usize) + Sync) = &f;
    // SAFETY (lifetime erasure): see `TaskRef`; we close the job and wait for joined workers
    // below before returning, also when a task on this thread panics (the guard's drop waits).
    let task = TaskRef(unsafe {
        std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static (dyn Fn(usize) + Sync)>(dyn_f)
    });
    *shared.job.lock().unwrap_or_else(|e| e.into_inner()) = Some((task, n_tasks));
    shared.next.store(0, Ordering::Relaxed);
    shared.panicked.store(false, Ordering::Relaxed);
    shared.state.store(OPEN, Ordering::Release);
    shared.epoch.fetch_add(1, Ordering::AcqRel);
    for w in &guard.workers {
        w.handle.thread().unpark();
    }

    struct WaitForWorkers<'a>(&'a Shared);
    impl Drop for WaitForWorkers<'_> {
        fn drop(&mut self) {
            self.0.state.fetch_and(!OPEN, Ordering::AcqRel);
            let mut spins = 0u32;
            while self.0.state.load(Ordering::Acquire) != 0 {
                spins += 1;
                if spins < 1 << 12 {
                    std::hint::spin_loop();
                } else {
                    thread::yield_now();
                }
            }
            *self.0.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
    let wait = WaitForWorkers(shared);
    IN_TASK.with(|c| c.set(true));
    let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_tasks(shared, dyn_f, n_tasks)
    }));
    IN_TASK.with(|c| c.set(false));
    drop(wait);
    if let Err(payload) = mine {
        std::panic::resume_unwind(payload);
    }
    if shared.panicked.load(Ordering::Acquire) {
        panic!("a parallel_for task panicked on a pool thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        for n in [0usize, 1, 2, 3, 17, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            parallel_for(n, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "n = {n}"
            );
        }
    }

    #[test]
    fn thread_count_can_change() {
        let before = threads();
        for n in [3, 1, 2] {
            set_threads(n);
            assert_eq!(threads(), n);
            let sum = AtomicUsize::new(0);
            parallel_for(100, |i| {
                sum.fetch_add(i, Ordering::Relaxed);
            });
            assert_eq!(sum.load(Ordering::Relaxed), 4950);
        }
        set_threads(0);
        assert_eq!(threads(), 1);
        set_threads(before);
    }

    #[test]
    fn nested_loops_run_inline() {
        let total = AtomicUsize::new(0);
        parallel_for(4, |_| {
            parallel_for(5, |_| {
                total.fetch_add(1, Ordering::Relaxed);
            })
        });
        assert_eq!(total.load(Ordering::Relaxed), 20);
    }

    #[test]
    fn panics_propagate_and_pool_survives() {
        let r =
            std::panic::catch_unwind(|| parallel_for(64, |i| assert!(i != 37, "task 37 fails")));
        assert!(r.is_err());
        let count = AtomicUsize::new(0);
        parallel_for(64, |_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 64);
    }
}
