//! The pipeline conformance suite against `FileLog`.

use floe_emitter::conformance::{self, PipelineFactory};
use floe_emitter::{FileLog, FsyncPolicy, LogOptions};
use tempfile::TempDir;

/// A fresh log directory, reopened as often as the suite asks.
struct FileLogFactory {
    dir: TempDir,
    options: LogOptions,
}

impl PipelineFactory for FileLogFactory {
    type Pipeline = FileLog;

    async fn open(&mut self) -> floe_engine::Result<FileLog> {
        let dir = self.dir.path().to_path_buf();
        let options = self.options.clone();
        let log = tokio::task::spawn_blocking(move || FileLog::open(&dir, options))
            .await
            .expect("open task")?;
        Ok(log)
    }
}

/// Small segments so that retention has whole segments to delete, and real
/// fsyncs so the durable path is the one tested.
async fn file_log(partitions: u32) -> FileLogFactory {
    FileLogFactory {
        dir: tempfile::tempdir().expect("temp dir"),
        options: LogOptions {
            partitions,
            segment_bytes: 16 * 1024,
            fsync: FsyncPolicy::Always,
        },
    }
}

floe_emitter::pipeline_conformance_tests!(file_log);

/// `run_all` drives the same cases one after the other (without fsync, to keep
/// it quick).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_passes_with_fsync_never() {
    conformance::run_all(|partitions| async move {
        let mut factory = file_log(partitions).await;
        factory.options.fsync = FsyncPolicy::Never;
        factory
    })
    .await;
}
