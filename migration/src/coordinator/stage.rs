//! How far a running migration has changed the deployment, and what a
//! failure at that point must do: pure, so each case is a unit test.

/// What a migration has changed so far, in the order it changes things.
/// Only moves forward ([`Stage::advance`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// The job is recorded; the deployment is untouched.
    Recorded,
    /// The new shards run and the migration's admission hook is in the
    /// routing table (writes to moving keys pass its gate); copies are being
    /// made on the targets. The persisted topology is the old one.
    Installed,
    /// The new topology is persisted, routing is still the old one. A
    /// restart now would come up under the new topology.
    Persisted,
    /// Routing follows the new topology. There is no way back: the
    /// migration finishes forward.
    CutOver,
}

/// What ending a migration at a stage takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Nothing to undo.
    Nothing,
    /// Routing back to the old topology without the hook, held writes
    /// released to their old owners, copies dropped from the targets, added
    /// shards retired.
    Uninstall,
    /// The old topology persisted again, then [`Settle::Uninstall`].
    RestoreAndUninstall,
    /// Forward: the job is completed (what is left is clean-up of old
    /// owners, whose copies no read sees).
    FinishForward,
}

/// What a simulated process death (`failpoints`) leaves undone in this
/// process so that its writers are not stuck: the persisted topology and
/// the job file stay as they are for the restart to settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unblock {
    /// Nothing was installed.
    Nothing,
    /// Remove the hook and its routing (back to the old router) and release
    /// held writes.
    RemoveHook,
    /// Routing already follows the new topology: only release held writes.
    ReleaseBuffer,
}

impl Stage {
    /// Moves to `next`; a stage never goes back (a bug if it would).
    pub fn advance(&mut self, next: Stage) {
        debug_assert!(next > *self, "stage {next:?} cannot follow {self:?}");
        *self = next.max(*self);
    }

    /// What a failure at this stage does.
    pub fn on_failure(self) -> Settle {
        match self {
            Stage::Recorded => Settle::Nothing,
            Stage::Installed => Settle::Uninstall,
            Stage::Persisted => Settle::RestoreAndUninstall,
            Stage::CutOver => Settle::FinishForward,
        }
    }

    /// What a simulated crash at this stage undoes in-process.
    pub fn on_crash(self) -> Unblock {
        match self {
            Stage::Recorded => Unblock::Nothing,
            Stage::Installed | Stage::Persisted => Unblock::RemoveHook,
            Stage::CutOver => Unblock::ReleaseBuffer,
        }
    }

    /// Whether the topology a restart would use is the new one.
    pub fn persisted_new_topology(self) -> bool {
        self >= Stage::Persisted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_before_the_cutover_undoes_exactly_what_was_done() {
        assert_eq!(Stage::Recorded.on_failure(), Settle::Nothing);
        assert_eq!(Stage::Installed.on_failure(), Settle::Uninstall);
        assert_eq!(Stage::Persisted.on_failure(), Settle::RestoreAndUninstall);
    }

    #[test]
    fn after_the_cutover_a_migration_only_goes_forward() {
        assert_eq!(Stage::CutOver.on_failure(), Settle::FinishForward);
        assert_eq!(Stage::CutOver.on_crash(), Unblock::ReleaseBuffer);
        assert!(Stage::CutOver.persisted_new_topology());
    }

    #[test]
    fn a_crash_unblocks_writers_without_touching_what_a_restart_reads() {
        assert_eq!(Stage::Recorded.on_crash(), Unblock::Nothing);
        assert_eq!(Stage::Installed.on_crash(), Unblock::RemoveHook);
        assert_eq!(Stage::Persisted.on_crash(), Unblock::RemoveHook);
        assert!(!Stage::Installed.persisted_new_topology());
        assert!(Stage::Persisted.persisted_new_topology());
    }

    #[test]
    fn stages_only_advance() {
        let mut stage = Stage::Recorded;
        for next in [Stage::Installed, Stage::Persisted, Stage::CutOver] {
            stage.advance(next);
            assert_eq!(stage, next);
        }
    }
}
