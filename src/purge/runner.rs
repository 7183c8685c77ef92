//! The one bounded-concurrency runner of the purge: the dry run, evidence, execution and
//! verification all hand it jobs keyed by place (a registry host, a builder), and it runs them
//! as tasks with at most the place's limit in flight there at a time.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// One job: where it acts, how many jobs may act there at once, and the work.
pub struct Job<F> {
    pub place: String,
    pub limit: usize,
    pub work: F,
}

/// Runs every job, at most `limit` at a time per place (the first job of a place sets the
/// place's limit), and returns their results in the jobs' order. The first error ends the run:
/// the jobs still in flight are dropped, as an interrupted purge is, and the journal says what
/// they had done.
pub async fn run<F, T, E>(jobs: Vec<Job<F>>) -> Result<Vec<T>, E>
where
    F: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let total = jobs.len();
    let mut places: HashMap<String, Arc<Semaphore>> = HashMap::new();
    let mut tasks = JoinSet::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let semaphore = places
            .entry(job.place)
            .or_insert_with(|| Arc::new(Semaphore::new(job.limit.max(1))))
            .clone();
        let work = job.work;
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await.expect("semaphore open");
            (i, work.await)
        });
    }
    let mut results: Vec<Option<T>> = std::iter::repeat_with(|| None).take(total).collect();
    while let Some(joined) = tasks.join_next().await {
        let (i, result) = joined.expect("purge task panicked");
        results[i] = Some(result?);
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every job ran"))
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// No place ever has more jobs in flight than its limit, places run side by side, and the
    /// results come back in the jobs' order whatever order they finished in.
    #[tokio::test]
    async fn bounds_each_place_and_keeps_the_order() {
        let in_flight: Arc<HashMap<&str, AtomicUsize>> =
            Arc::new([("a", AtomicUsize::new(0)), ("b", AtomicUsize::new(0))].into());
        let most: Arc<HashMap<&str, AtomicUsize>> =
            Arc::new([("a", AtomicUsize::new(0)), ("b", AtomicUsize::new(0))].into());
        let jobs = (0..12)
            .map(|i| {
                let place = if i % 3 == 0 { "b" } else { "a" };
                let (in_flight, most) = (in_flight.clone(), most.clone());
                Job {
                    place: place.to_owned(),
                    limit: if place == "a" { 2 } else { 1 },
                    work: async move {
                        let now = in_flight[place].fetch_add(1, Ordering::SeqCst) + 1;
                        most[place].fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5 + (12 - i) % 4)).await;
                        in_flight[place].fetch_sub(1, Ordering::SeqCst);
                        Ok::<u64, ()>(i)
                    },
                }
            })
            .collect();
        let results = run(jobs).await.unwrap();
        assert_eq!(results, (0..12).collect::<Vec<_>>());
        assert_eq!(most["a"].load(Ordering::SeqCst), 2);
        assert_eq!(most["b"].load(Ordering::SeqCst), 1);
    }

    /// An error ends the run with that error.
    #[tokio::test]
    async fn the_first_error_ends_the_run() {
        let jobs = (0..4)
            .map(|i| Job {
                place: "a".to_owned(),
                limit: 1,
                work: async move { if i == 1 { Err(i) } else { Ok(i) } },
            })
            .collect();
        assert_eq!(run(jobs).await, Err(1));
    }
}
