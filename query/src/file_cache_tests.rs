//! The cache over a real in-memory object store. A read that the cache
//! claims to answer from memory is checked by deleting the object from the
//! store underneath first: only memory can still answer it.

use std::sync::Arc;

use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};

use super::*;

fn content(len: usize) -> Bytes {
    (0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>().into()
}

async fn store_with(path: &Path, len: usize, capacity: u64) -> (Arc<InMemory>, CachedStore) {
    let inner = Arc::new(InMemory::new());
    inner
        .put(path, PutPayload::from(content(len)))
        .await
        .unwrap();
    let cached = CachedStore::new(inner.clone(), capacity);
    (inner, cached)
}

#[tokio::test]
async fn a_second_read_of_the_same_bytes_is_answered_from_memory() {
    let path = Path::from("data/a.parquet");
    let (inner, cached) = store_with(&path, 1000, 1 << 20).await;
    let whole = content(1000);
    assert_eq!(
        cached.get_range(&path, 100..300).await.unwrap(),
        whole.slice(100..300)
    );
    inner.delete(&path).await.unwrap();
    // The same range and one inside it: memory.
    assert_eq!(
        cached.get_range(&path, 100..300).await.unwrap(),
        whole.slice(100..300)
    );
    assert_eq!(
        cached.get_range(&path, 150..160).await.unwrap(),
        whole.slice(150..160)
    );
    let result = cached
        .get_opts(
            &path,
            GetOptions {
                range: Some(GetRange::Bounded(120..130)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(result.meta.size, 1000);
    assert_eq!(result.range, 120..130);
    assert_eq!(result.bytes().await.unwrap(), whole.slice(120..130));
    // Bytes it never read: the store, where the object is gone.
    let err = cached.get_range(&path, 250..350).await.unwrap_err();
    assert!(matches!(err, object_store::Error::NotFound { .. }), "{err}");
    let stats = cached.handle().stats();
    assert_eq!((stats.hits, stats.misses), (3, 2), "{stats:?}");
    assert_eq!((stats.bytes, stats.entries), (200, 1), "{stats:?}");
}

#[tokio::test]
async fn ranges_read_together_mix_memory_and_the_store_in_order() {
    let path = Path::from("data/b.parquet");
    let (inner, cached) = store_with(&path, 4000, 1 << 20).await;
    let whole = content(4000);
    cached.get_range(&path, 1000..1100).await.unwrap();
    let asked = [0..10, 1000..1100, 2000..2500, 1020..1030, 3990..4010];
    let got = cached.get_ranges(&path, &asked).await.unwrap();
    // The last range runs past the end and comes back short, as from S3.
    let expected = [0..10, 1000..1100, 2000..2500, 1020..1030, 3990..4000];
    for (got, range) in got.iter().zip(expected) {
        assert_eq!(got, &whole.slice(range.start as usize..range.end as usize));
    }
    inner.delete(&path).await.unwrap();
    let again = cached.get_ranges(&path, &asked).await.unwrap();
    assert_eq!(again, got, "every range is in memory now");
    let stats = cached.handle().stats();
    assert_eq!(stats.hits, 2 + asked.len() as u64, "{stats:?}");
}

#[tokio::test]
async fn the_least_recently_used_ranges_go_first_and_the_cache_stays_within_capacity() {
    let path = Path::from("data/c.parquet");
    let (inner, cached) = store_with(&path, 2000, 800).await;
    // Eight ranges of 100 bytes fill the 800.
    for i in 0..8u64 {
        cached
            .get_range(&path, i * 100..i * 100 + 100)
            .await
            .unwrap();
    }
    assert_eq!(cached.handle().stats().bytes, 800);
    // Range 0 is used again, so range 1 is now the oldest.
    cached.get_range(&path, 0..100).await.unwrap();
    cached.get_range(&path, 800..900).await.unwrap();
    let stats = cached.handle().stats();
    assert_eq!((stats.bytes, stats.entries), (800, 8), "{stats:?}");
    inner.delete(&path).await.unwrap();
    assert!(
        cached.get_range(&path, 0..100).await.is_ok(),
        "used recently"
    );
    assert!(cached.get_range(&path, 800..900).await.is_ok(), "newest");
    assert!(cached.get_range(&path, 100..200).await.is_err(), "evicted");
    for i in 2..8u64 {
        assert!(
            cached
                .get_range(&path, i * 100..i * 100 + 100)
                .await
                .is_ok()
        );
    }
}

#[tokio::test]
async fn a_read_larger_than_an_eighth_of_the_cache_is_not_kept() {
    let path = Path::from("data/d.parquet");
    let (inner, cached) = store_with(&path, 2000, 800).await;
    cached.get_range(&path, 0..101).await.unwrap();
    cached.get_range(&path, 200..300).await.unwrap();
    inner.delete(&path).await.unwrap();
    assert!(cached.get_range(&path, 0..101).await.is_err());
    assert!(cached.get_range(&path, 200..300).await.is_ok());
    let disabled = CachedStore::new(Arc::new(InMemory::new()), 0);
    disabled
        .put(&path, PutPayload::from(content(10)))
        .await
        .unwrap();
    disabled.get_range(&path, 0..10).await.unwrap();
    assert_eq!(disabled.handle().stats().entries, 0);
}

#[tokio::test]
async fn conditional_versioned_head_and_open_ended_reads_go_to_the_store() {
    let path = Path::from("data/e.parquet");
    let (inner, cached) = store_with(&path, 1000, 1 << 20).await;
    cached.get_range(&path, 0..1000).await.unwrap();
    inner.delete(&path).await.unwrap();
    let with = |f: fn(&mut GetOptions)| {
        let mut options = GetOptions {
            range: Some(GetRange::Bounded(0..10)),
            ..Default::default()
        };
        f(&mut options);
        options
    };
    let bypassing = [
        with(|o| o.if_match = Some("*".into())),
        with(|o| o.if_none_match = Some("x".into())),
        with(|o| o.version = Some("1".into())),
        with(|o| o.head = true),
        with(|o| o.range = Some(GetRange::Suffix(10))),
        with(|o| o.range = Some(GetRange::Offset(10))),
        with(|o| o.range = None),
    ];
    for options in bypassing {
        let shown = format!("{options:?}");
        let err = cached.get_opts(&path, options).await.unwrap_err();
        assert!(
            matches!(err, object_store::Error::NotFound { .. }),
            "{shown}: {err}"
        );
    }
    assert!(cached.get_range(&path, 0..10).await.is_ok());
}

#[tokio::test]
async fn writes_through_the_cache_drop_what_it_holds_for_their_path() {
    let path = Path::from("data/f.parquet");
    let other = Path::from("data/g.parquet");
    let (_inner, cached) = store_with(&path, 1000, 1 << 20).await;
    cached
        .put(&other, PutPayload::from(content(1000)))
        .await
        .unwrap();
    cached.get_range(&path, 0..10).await.unwrap();
    cached.get_range(&other, 0..10).await.unwrap();
    let replaced = Bytes::from_static(b"replaced!!");
    cached
        .put(&path, PutPayload::from(replaced.clone()))
        .await
        .unwrap();
    assert_eq!(cached.get_range(&path, 0..10).await.unwrap(), replaced);
    cached.copy(&other, &path).await.unwrap();
    assert_eq!(cached.get_range(&path, 0..10).await.unwrap(), content(10));
    cached.delete(&path).await.unwrap();
    assert!(cached.get_range(&path, 0..10).await.is_err());
    assert_eq!(
        cached.handle().stats().entries,
        1,
        "only the other file's range"
    );
}

#[tokio::test]
async fn a_read_past_the_end_is_clamped_once_the_size_is_known() {
    let path = Path::from("data/h.parquet");
    let (inner, cached) = store_with(&path, 1000, 1 << 20).await;
    let first = cached.get_range(&path, 900..1200).await.unwrap();
    assert_eq!(first, content(1000).slice(900..1000));
    inner.delete(&path).await.unwrap();
    assert_eq!(cached.get_range(&path, 900..1200).await.unwrap(), first);
}

#[tokio::test]
async fn clearing_drops_every_range_and_keeps_the_counters() {
    let path = Path::from("data/i.parquet");
    let (inner, cached) = store_with(&path, 1000, 1 << 20).await;
    cached.get_range(&path, 0..100).await.unwrap();
    cached.get_range(&path, 0..100).await.unwrap();
    cached.handle().clear();
    let stats = cached.handle().stats();
    assert_eq!((stats.bytes, stats.entries), (0, 0), "{stats:?}");
    assert_eq!((stats.hits, stats.misses), (1, 1), "{stats:?}");
    inner.delete(&path).await.unwrap();
    assert!(
        cached.get_range(&path, 0..100).await.is_err(),
        "nothing left in memory"
    );
}
