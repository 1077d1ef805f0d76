//! Commits against the very table version the sink checked.
//!
//! `Transaction::commit` (iceberg-rust 0.10) reloads the table before it
//! builds the commit's requirements, and re-applies the actions on whatever
//! it finds: a fast append checked against snapshot H would be rebased onto
//! a snapshot H' that another sink committed in between, landing the same
//! offsets twice, and a lease stamp checked against one owner would be
//! written over another's. [`commit`] hands the transaction a catalog whose
//! `load_table` returns the table the caller checked, so the requirements
//! (`RefSnapshotIdMatch` of a fast append) are those of that version and the
//! catalog's compare-and-swap refuses the commit if anything moved. A refused
//! commit is never rebased here: the caller reloads, checks again and decides.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use iceberg::table::Table;
use iceberg::transaction::Transaction;
use iceberg::{
    Catalog, Error, ErrorKind, Namespace, NamespaceIdent, Result, TableCommit, TableCreation,
    TableIdent,
};

/// Commits `tx`, built from `checked`, with requirements taken from
/// `checked` itself. A conflict (the table moved since `checked` was loaded)
/// fails with [`ErrorKind::CatalogCommitConflicts`], not retried.
pub(crate) async fn commit(
    catalog: &Arc<dyn Catalog>,
    checked: &Table,
    tx: Transaction,
) -> Result<Table> {
    let pinned = Pinned {
        inner: catalog.clone(),
        table: checked.clone(),
        loads: AtomicU32::new(0),
    };
    tx.commit(&pinned).await
}

/// Whether a commit failed because the table moved (or the catalog's answer
/// was lost and the transaction wanted to retry): reload, check, try again.
pub(crate) fn moved(e: &Error) -> bool {
    e.kind() == ErrorKind::CatalogCommitConflicts
}

/// A catalog that answers `load_table` of one table with a pinned version,
/// once; everything else goes to the real catalog.
#[derive(Debug)]
struct Pinned {
    inner: Arc<dyn Catalog>,
    table: Table,
    loads: AtomicU32,
}

#[async_trait]
impl Catalog for Pinned {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> Result<Vec<NamespaceIdent>> {
        self.inner.list_namespaces(parent).await
    }

    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<Namespace> {
        self.inner.create_namespace(namespace, properties).await
    }

    async fn get_namespace(&self, namespace: &NamespaceIdent) -> Result<Namespace> {
        self.inner.get_namespace(namespace).await
    }

    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> Result<bool> {
        self.inner.namespace_exists(namespace).await
    }

    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<()> {
        self.inner.update_namespace(namespace, properties).await
    }

    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> Result<()> {
        self.inner.drop_namespace(namespace).await
    }

    async fn list_tables(&self, namespace: &NamespaceIdent) -> Result<Vec<TableIdent>> {
        self.inner.list_tables(namespace).await
    }

    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> Result<Table> {
        self.inner.create_table(namespace, creation).await
    }

    async fn load_table(&self, table: &TableIdent) -> Result<Table> {
        if table != self.table.identifier() {
            return self.inner.load_table(table).await;
        }
        // The transaction loads once per attempt; a second load means its
        // first attempt failed retryably (a conflict, a lost answer), and
        // retrying would rebase onto a version nobody checked.
        if self.loads.fetch_add(1, Ordering::SeqCst) == 0 {
            Ok(self.table.clone())
        } else {
            Err(Error::new(
                ErrorKind::CatalogCommitConflicts,
                "the commit against the checked table version failed; the sink reloads and checks again",
            )
            .with_retryable(false))
        }
    }

    async fn drop_table(&self, table: &TableIdent) -> Result<()> {
        self.inner.drop_table(table).await
    }

    async fn purge_table(&self, table: &TableIdent) -> Result<()> {
        self.inner.purge_table(table).await
    }

    async fn table_exists(&self, table: &TableIdent) -> Result<bool> {
        self.inner.table_exists(table).await
    }

    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> Result<()> {
        self.inner.rename_table(src, dest).await
    }

    async fn register_table(&self, table: &TableIdent, metadata_location: String) -> Result<Table> {
        self.inner.register_table(table, metadata_location).await
    }

    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        self.inner.update_table(commit).await
    }
}
