//! Entity subcommands against an embedded data directory.

use anyhow::Context;
use clap::Args;
use floe::{Config, EntityKey, Floe, WriteRequest};
use serde_json::Value;

#[derive(Debug, Args)]
pub(crate) struct KeyArgs {
    /// Namespace (usually the tenant).
    namespace: String,
    /// Entity type.
    entity_type: String,
    /// Entity id.
    id: String,
}

impl KeyArgs {
    fn key(&self) -> EntityKey {
        EntityKey::new(&self.namespace, &self.entity_type, &self.id)
    }
}

#[derive(Debug, Args)]
pub(crate) struct WriteOptions {
    /// Fail unless the entity is at this version (0: must not exist).
    #[arg(long)]
    expected_version: Option<u64>,
    /// Makes a retry return the first outcome instead of writing again.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Route by this partition key instead of extracting it.
    #[arg(long)]
    partition_key: Option<String>,
}

impl WriteOptions {
    fn apply(&self, mut request: WriteRequest) -> WriteRequest {
        if let Some(v) = self.expected_version {
            request = request.expected_version(v);
        }
        if let Some(k) = &self.idempotency_key {
            request = request.idempotency_key(k);
        }
        if let Some(k) = &self.partition_key {
            request = request.partition_key(k);
        }
        request
    }
}

#[derive(Debug, Args)]
pub(crate) struct PutArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// The entity's data, a JSON object.
    #[arg(value_name = "JSON")]
    json: String,
    /// Fail if the entity exists instead of replacing it.
    #[arg(long)]
    create: bool,
    #[command(flatten)]
    options: WriteOptions,
}

#[derive(Debug, Args)]
pub(crate) struct UpdateArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// A JSON merge patch (RFC 7386).
    patch: String,
    #[command(flatten)]
    options: WriteOptions,
}

#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    options: WriteOptions,
}

#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// Route by this partition key (needed when it comes from data fields).
    #[arg(long)]
    partition_key: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Namespace.
    namespace: String,
    /// Entity type.
    entity_type: String,
    /// At most this many entities.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Only ids after this one (pagination).
    #[arg(long)]
    after: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ShardForKeyArgs {
    /// The partition key.
    key: String,
}

fn parse_json(text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).with_context(|| format!("parsing JSON {text:?}"))
}

/// Runs `f` against the data directory and closes it whatever happens.
async fn with_floe<T>(
    config: Config,
    f: impl AsyncFnOnce(&Floe) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let floe = Floe::open(config).await?;
    let result = f(&floe).await;
    floe.close().await?;
    result
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub(crate) async fn put(config: Config, args: PutArgs) -> anyhow::Result<()> {
    let data = parse_json(&args.json)?;
    let request = if args.create {
        WriteRequest::create(args.key.key(), data)
    } else {
        WriteRequest::upsert(args.key.key(), data)
    };
    let request = args.options.apply(request);
    with_floe(config, async |floe| print_json(&floe.write(request).await?)).await
}

pub(crate) async fn update(config: Config, args: UpdateArgs) -> anyhow::Result<()> {
    let request = args.options.apply(WriteRequest::update(
        args.key.key(),
        parse_json(&args.patch)?,
    ));
    with_floe(config, async |floe| print_json(&floe.write(request).await?)).await
}

pub(crate) async fn delete(config: Config, args: DeleteArgs) -> anyhow::Result<()> {
    let request = args.options.apply(WriteRequest::delete(args.key.key()));
    with_floe(config, async |floe| print_json(&floe.write(request).await?)).await
}

pub(crate) async fn get(config: Config, args: GetArgs) -> anyhow::Result<()> {
    let key = args.key.key();
    with_floe(config, async |floe| {
        let entity = match &args.partition_key {
            Some(pk) => floe.get_routed(&key, pk).await?,
            None => floe.get(&key).await?,
        };
        match entity {
            Some(entity) => print_json(&entity),
            None => anyhow::bail!("entity {key} not found"),
        }
    })
    .await
}

pub(crate) async fn list(config: Config, args: ListArgs) -> anyhow::Result<()> {
    with_floe(config, async |floe| {
        let entities = floe
            .list(
                &args.namespace,
                &args.entity_type,
                args.after.as_deref(),
                args.limit,
            )
            .await?;
        print_json(&entities)
    })
    .await
}

pub(crate) async fn shard_for_key(config: Config, args: ShardForKeyArgs) -> anyhow::Result<()> {
    with_floe(config, async |floe| {
        print_json(&floe.shard_for_key(&args.key))
    })
    .await
}

pub(crate) async fn topology(config: Config) -> anyhow::Result<()> {
    with_floe(config, async |floe| print_json(&floe.topology())).await
}

pub(crate) async fn stats(config: Config) -> anyhow::Result<()> {
    with_floe(config, async |floe| {
        let shards = floe.shard_stats().await?;
        print_json(&serde_json::json!({
            "shards": shards,
            "archive": floe.archive_stats().await?,
            "utilization": floe.utilization(),
            "rebalance_hints": floe.rebalance_hints(),
        }))
    })
    .await
}
