//! The pipeline conformance suite against `KafkaPipeline` on a real broker:
//! each test starts its own tansu (SQLite engine, loopback, free port, temp
//! dir) and uses its own topic. Without a broker binary the tests fail, they
//! never skip.

use floe_emitter::conformance::PipelineFactory;
use floe_emitter::{KafkaOptions, KafkaPipeline, TansuBroker};

/// One broker and one fresh topic, reopened as often as the suite asks.
struct KafkaFactory {
    options: KafkaOptions,
    // Dropped (and the broker killed) when the test ends, also on panic.
    _broker: TansuBroker,
}

impl PipelineFactory for KafkaFactory {
    type Pipeline = KafkaPipeline;

    async fn open(&mut self) -> floe_engine::Result<KafkaPipeline> {
        KafkaPipeline::open(self.options.clone())
            .await
            .map_err(|e| e.into_pipeline_error("kafka"))
    }

    /// tansu 0.6 has no `DeleteRecords` (its SQLite engine panics on it), so
    /// the pipeline runs with `delete_records` off and the retention case
    /// checks that nothing is deleted.
    fn supports_delete_before(&self) -> bool {
        self.options.delete_records
    }
}

async fn kafka(partitions: u32) -> KafkaFactory {
    let broker = tokio::task::spawn_blocking(TansuBroker::start)
        .await
        .expect("broker start task")
        .unwrap_or_else(|e| panic!("the Kafka conformance tests need a broker: {e}"));
    let topic = format!("floe-conformance-{}", uuid::Uuid::new_v4().simple());
    let mut options = KafkaOptions::new(broker.bootstrap(), topic, partitions);
    options.delete_records = false;
    KafkaFactory {
        options,
        _broker: broker,
    }
}

floe_emitter::pipeline_conformance_tests!(kafka);
