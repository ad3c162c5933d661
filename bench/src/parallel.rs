//! Running many setup steps (connections, queue creation) at a bounded concurrency.

use std::future::Future;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Runs `step(0..n)` with at most `concurrency` running at once and returns the results in
/// index order, or the first error (the rest are cancelled).
pub async fn run_indexed<T, F, Fut>(n: usize, concurrency: usize, step: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut store = |joined: std::result::Result<(usize, Result<T>), tokio::task::JoinError>| {
        let (i, result) = joined?;
        if let Some(slot) = out.get_mut(i) {
            *slot = Some(result?);
        }
        Ok::<(), anyhow::Error>(())
    };
    for i in 0..n {
        let permit = permits.clone().acquire_owned().await?;
        let fut = step(i);
        set.spawn(async move {
            let result = fut.await;
            drop(permit);
            (i, result)
        });
        // Collect what already finished so an early error stops the run quickly.
        while let Some(joined) = set.try_join_next() {
            store(joined)?;
        }
    }
    while let Some(joined) = set.join_next().await {
        store(joined)?;
    }
    out.into_iter()
        .map(|slot| slot.ok_or_else(|| anyhow!("a setup step did not finish")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_come_back_in_index_order() {
        let out = run_indexed(50, 4, |i| async move { Ok(i * 2) })
            .await
            .unwrap();
        assert_eq!(out, (0..50).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn first_error_is_returned() {
        let out = run_indexed(10, 2, |i| async move {
            if i == 3 {
                anyhow::bail!("step 3 failed")
            }
            Ok(i)
        })
        .await;
        assert!(out.is_err());
    }
}
