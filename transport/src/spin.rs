//! Bounded busy-polling: a task that expects an answer within microseconds polls for it
//! a while before it lets its thread sleep. On a VM whose idle vCPUs halt, waking a
//! sleeping thread costs tens of µs, more than the rest of a small call; a thread that
//! keeps polling the runtime's I/O driver (`epoll_wait` with a zero timeout, each time
//! the task yields) sees the answer as soon as it lands. It spends a core's time while
//! it waits, so it is opt-in and bounded.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

/// The longest spin accepted: beyond a millisecond, sleeping costs less than the wait.
pub const MAX_SPIN: Duration = Duration::from_millis(1);

/// Awaits `fut`; while it is pending, for up to `budget` (at most [`MAX_SPIN`]), the task
/// yields instead of sleeping, so that its thread polls the I/O driver without blocking
/// and runs whatever that wakes (the task reading the answer) before this one again. A
/// zero budget is a plain `.await`.
pub async fn spin_on<F: Future>(fut: F, budget: Duration) -> F::Output {
    let mut fut = pin!(fut);
    if budget.is_zero() {
        return fut.await;
    }
    let until = Instant::now() + budget.min(MAX_SPIN);
    loop {
        let polled = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        if let Poll::Ready(out) = polled {
            return out;
        }
        if Instant::now() >= until {
            return fut.await;
        }
        // Tokio defers a yielded task until its thread has polled the I/O driver
        // without blocking, which is the poll this loop is for.
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Pending for ever, counting its polls.
    fn counted(polls: Arc<AtomicUsize>) -> impl Future<Output = ()> {
        std::future::poll_fn(move |_| {
            polls.fetch_add(1, Ordering::Relaxed);
            Poll::<()>::Pending
        })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_spinning_task_reads_an_answer_written_while_it_spins() {
        use tokio::io::AsyncReadExt;
        let (mut a, b) = tokio::net::UnixStream::pair().expect("a socket pair");
        let mut b = b.into_std().expect("a std socket");
        b.set_nonblocking(false).expect("blocking");
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(200));
            std::io::Write::write_all(&mut b, b"x").map(|()| b)
        });
        let mut byte = [0u8; 1];
        let got = spin_on(a.read_exact(&mut byte), MAX_SPIN).await;
        assert!(got.is_ok() && byte == *b"x", "{got:?}");
        let _ = writer.join().expect("the writer thread");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_spin_stops_at_its_bound_and_the_task_sleeps() {
        let polls = Arc::new(AtomicUsize::new(0));
        let spinner = tokio::spawn(spin_on(counted(polls.clone()), Duration::from_secs(10)));
        tokio::time::sleep(Duration::from_millis(30)).await;
        let after_bound = polls.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(30)).await;
        let later = polls.load(Ordering::Relaxed);
        spinner.abort();
        assert!(after_bound > 2, "it spun: {after_bound} polls");
        assert_eq!(after_bound, later, "still polled after the bound");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn no_budget_polls_once_and_sleeps() {
        let polls = Arc::new(AtomicUsize::new(0));
        let spinner = tokio::spawn(spin_on(counted(polls.clone()), Duration::ZERO));
        tokio::time::sleep(Duration::from_millis(10)).await;
        spinner.abort();
        assert_eq!(polls.load(Ordering::Relaxed), 1);
    }
}
