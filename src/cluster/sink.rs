//! The lake's sink in cluster mode: once per cluster, on an elected node.
//!
//! Every node with the lake on and `lake.sink = true` is a candidate. The
//! candidates campaign for etcd's `sink` key ([`Election::for_sink`],
//! attached to the node's membership lease, as the placement controller's
//! `leader` key is). The winner runs the sink; the others wait for the key
//! to go (its node left, or its lease expired).
//!
//! Fencing: the sink asks [`EtcdFence`] right before every Iceberg commit,
//! and commits only while etcd still shows the key created by its term *and*
//! its lease is valid on its own clock (before `TTL - margin` after the last
//! keepalive sent). A sink that lost the election therefore stops before
//! committing. A commit it had in flight when its term ended was checked
//! against an older version of the table: the commit asserts that version
//! (`floe_emitter::sink` commits pinned), so once the next sink has
//! committed, the catalog refuses it. Two sinks never land the same offsets.
//! A newly elected sink resumes from the offsets of the lake's newest
//! snapshot, as every sink does, and takes the table's commit lease over.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use floe_cluster::{Election, LeaderTerm, LeaseState};
use floe_emitter::sink::{CommitFence, Lake};
use floe_engine::Pipeline;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ClusterNode;
use crate::lake::SinkTask;
use floe_config::Config;

/// The sink's election on this node, and the sink while it holds it.
#[derive(Debug)]
pub(crate) struct SinkSeat {
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl SinkSeat {
    /// Stops campaigning; a running sink lands what the pipeline holds (while
    /// its term still holds) and gives the election up.
    pub(crate) async fn stop(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "the sink election task panicked");
        }
    }
}

impl ClusterNode {
    /// Makes this node a sink candidate (`lake.sink = true` with the lake on).
    pub(crate) fn start_sink(
        self: &Arc<Self>,
        lake: Lake,
        pipeline: Arc<dyn Pipeline>,
        config: &Config,
    ) {
        let (stop, stopped) = watch::channel(false);
        let election = Election::for_sink(&self.member);
        let node = self.clone();
        let config = config.clone();
        let task = tokio::spawn(async move {
            run(node, election, lake, pipeline, config, stopped).await;
        });
        *self.sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(SinkSeat {
            stop,
            task: Mutex::new(Some(task)),
        });
    }

    /// Stops this node's sink candidacy (and its sink, if it runs here).
    pub(crate) async fn stop_sink(&self) {
        let seat = self.sink.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(seat) = seat {
            seat.stop().await;
        }
    }
}

/// "May I still commit?": the term read back from etcd, and the lease.
#[derive(Debug)]
struct EtcdFence {
    election: Election,
    term: LeaderTerm,
}

#[async_trait]
impl CommitFence for EtcdFence {
    async fn check(&self) -> std::result::Result<(), String> {
        match self.election.holds(&self.term).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "node {} no longer holds the sink election of term {} (its lease expired, was \
                 lost, or another node was elected)",
                self.term.node_id, self.term.term
            )),
            Err(e) => Err(format!(
                "cannot confirm the sink election of term {}: {e}",
                self.term.term
            )),
        }
    }
}

async fn run(
    node: Arc<ClusterNode>,
    election: Election,
    lake: Lake,
    pipeline: Arc<dyn Pipeline>,
    config: Config,
    mut stopped: watch::Receiver<bool>,
) {
    let poll = node.config().keepalive_interval();
    loop {
        let term = tokio::select! {
            term = election.campaign() => term,
            _ = stopped.changed() => return,
        };
        let term = match term {
            Ok(term) => term,
            Err(e) => {
                tracing::error!(error = %e, "this node left the sink election");
                return;
            }
        };
        let fence: Arc<dyn CommitFence> = Arc::new(EtcdFence {
            election: election.clone(),
            term: term.clone(),
        });
        let mut sink: Option<SinkTask> = None;
        let lost = loop {
            if *stopped.borrow() {
                break false;
            }
            if node.member.lease().state() == LeaseState::Lost {
                break true;
            }
            match election.holds(&term).await {
                Ok(false) => break true,
                // etcd unreachable: the fence refuses commits meanwhile; the
                // term is given up once the lease runs out.
                Err(e) => tracing::debug!(error = %e, "cannot read the sink election"),
                Ok(true) => {
                    if sink.as_ref().is_none_or(SinkTask::is_finished) {
                        if let Some(old) = sink.take() {
                            old.stop().await;
                        }
                        match SinkTask::start_fenced(
                            lake.clone(),
                            pipeline.clone(),
                            &config,
                            Some(fence.clone()),
                        )
                        .await
                        {
                            Ok(task) => {
                                tracing::info!(
                                    term = term.term,
                                    "this node runs the cluster's sink"
                                );
                                sink = Some(task);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "starting the elected sink failed; retrying")
                            }
                        }
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = stopped.changed() => {}
            }
        };
        match sink.take() {
            // Deposed: stop at once; its fence refuses any further commit.
            Some(task) if lost => {
                tracing::warn!(
                    term = term.term,
                    "this node lost the sink election; its sink stops"
                );
                task.abort().await;
            }
            // Leaving: land what the pipeline holds while the term holds.
            Some(task) => task.stop().await,
            None => {}
        }
        if !lost {
            if let Err(e) = election.resign(&term).await {
                tracing::warn!(error = %e, "giving the sink election up failed; it ends with the lease");
            }
            return;
        }
    }
}
