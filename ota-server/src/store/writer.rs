//! Group commit: one task owns writing; concurrent requests' batches that arrive while a
//! commit is on disk are committed together in the next transaction, so a thousand devices
//! reporting at once cost a few fsyncs, not a thousand. Each caller still waits until its own
//! batch is durable before it answers.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Mutation, Store, StoreError};

/// Most batches folded into one transaction.
const MAX_GROUP: usize = 512;

type Job = (Vec<Mutation>, oneshot::Sender<Result<(), String>>);

/// A handle to the writer task.
#[derive(Clone, Debug)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task over `store`.
    pub fn start<S: Store>(store: Arc<S>) -> Self {
        let (jobs, mut rx) = mpsc::channel::<Job>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(job) => group.push(job),
                        Err(_) => break,
                    }
                }
                let batch: Vec<Mutation> = group.iter().flat_map(|(m, _)| m.clone()).collect();
                match store.commit(&batch).await {
                    Ok(()) => {
                        for (_, reply) in group {
                            let _ = reply.send(Ok(()));
                        }
                    }
                    Err(e) => {
                        // One bad batch must not fail its neighbours: commit each on its own.
                        tracing::warn!(error = %e, batches = group.len(), "group commit failed");
                        for (mutations, reply) in group {
                            let result = store.commit(&mutations).await.map_err(|e| e.0);
                            if let Err(e) = &result {
                                tracing::error!(error = %e, "commit failed");
                            }
                            let _ = reply.send(result);
                        }
                    }
                }
            }
        });
        Writer { jobs }
    }

    /// Commits `batch` durably (together with whatever else is waiting).
    pub async fn commit(&self, batch: Vec<Mutation>) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send((batch, tx))
            .await
            .map_err(|_| StoreError("the writer has stopped".to_owned()))?;
        rx.await.map_err(|_| StoreError("the writer has stopped".to_owned()))?.map_err(StoreError)
    }
}
