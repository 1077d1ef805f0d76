//! The pipeline conformance suite against `MemPipeline`.

use floe_emitter::MemPipeline;
use floe_emitter::conformance::{self, PipelineFactory};

/// One in-memory store, reopened as often as the suite asks.
struct MemFactory {
    partitions: u32,
    store: Option<MemPipeline>,
}

impl PipelineFactory for MemFactory {
    type Pipeline = MemPipeline;

    async fn open(&mut self) -> floe_engine::Result<MemPipeline> {
        let store = self
            .store
            .get_or_insert_with(|| MemPipeline::new(self.partitions));
        Ok(store.reopen())
    }
}

async fn mem(partitions: u32) -> MemFactory {
    MemFactory {
        partitions,
        store: None,
    }
}

floe_emitter::pipeline_conformance_tests!(mem);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes() {
    conformance::run_all(mem).await;
}
