//! The workspace life cycle as one enum and one transition table. Every state, Corrupted
//! included, has a path to Destroyed (Nimbus #112); the seed's coarse image states (shutdown,
//! paused, running, corrupted) are a view of it.

use super::description::ImageState;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum State {
    /// Accepted by the factory; no image on any host yet.
    Unstaged,
    /// Image being staged to a host.
    Staging,
    /// Image on the host, VM not running (the repository lock is held from here on).
    Staged,
    Running,
    Paused,
    /// VM memory saved to disk.
    Saved,
    /// Transitional: a graceful stop under way (then Staged).
    Stopping,
    /// Transitional: memory being written to the save file (then Saved).
    Saving,
    /// Transitional: the VM coming back from its save file (then Running).
    Restoring,
    /// Something failed; only cleanup is possible.
    Corrupted,
    /// Gone; terminal.
    Destroyed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Event {
    Deploy,
    StagingDone,
    /// Staging failed (unreachable source, checksum mismatch…): back to Unstaged, retryable.
    StagingFailed,
    Start,
    Stop,
    Pause,
    Unpause,
    Save,
    Restore,
    Undeploy,
    Reboot,
    /// A transitional state's work finished.
    Done,
    /// A transitional state's work failed; the workspace goes back where it was.
    Failed,
    Fail,
    Destroy,
}

impl State {
    pub const ALL: [State; 11] = [
        State::Unstaged,
        State::Staging,
        State::Staged,
        State::Running,
        State::Paused,
        State::Saved,
        State::Stopping,
        State::Saving,
        State::Restoring,
        State::Corrupted,
        State::Destroyed,
    ];

    /// The transition table. None = the event is not allowed in this state.
    pub fn on(self, e: Event) -> Option<State> {
        use Event as E;
        use State as S;
        match (self, e) {
            (S::Destroyed, _) => None,
            (_, E::Destroy) => Some(S::Destroyed),
            // Cleanup always works from Corrupted (Nimbus #112, #113).
            (S::Corrupted, E::Undeploy) => Some(S::Unstaged),
            (S::Corrupted, _) => None,
            (_, E::Fail) => Some(S::Corrupted),
            (S::Unstaged, E::Deploy) => Some(S::Staging),
            (S::Staging, E::StagingDone) => Some(S::Staged),
            (S::Staging, E::StagingFailed) => Some(S::Unstaged),
            (S::Staged, E::Start) => Some(S::Running),
            (S::Running | S::Paused, E::Stop) => Some(S::Stopping),
            (S::Stopping, E::Done) => Some(S::Staged),
            (S::Running, E::Pause) => Some(S::Paused),
            (S::Running, E::Reboot) => Some(S::Running),
            (S::Running | S::Paused, E::Save) => Some(S::Saving),
            (S::Saving, E::Done) => Some(S::Saved),
            (S::Saving, E::Failed) => Some(S::Running),
            (S::Paused, E::Unpause) => Some(S::Running),
            (S::Saved, E::Restore) => Some(S::Restoring),
            (S::Restoring, E::Done) => Some(S::Running),
            (S::Restoring, E::Failed) => Some(S::Saved),
            (S::Staged | S::Running | S::Paused | S::Saved, E::Undeploy) => Some(S::Unstaged),
            (
                S::Unstaged | S::Staging | S::Staged | S::Running | S::Paused | S::Saved | S::Stopping | S::Saving | S::Restoring,
                E::Deploy
                | E::StagingDone
                | E::StagingFailed
                | E::Start
                | E::Stop
                | E::Pause
                | E::Unpause
                | E::Save
                | E::Restore
                | E::Undeploy
                | E::Reboot
                | E::Done
                | E::Failed,
            ) => None,
        }
    }

    /// The operations a caller may ask for in this state (for faults).
    pub fn allowed_operations(self) -> Vec<&'static str> {
        const OPS: [(Event, &str); 10] = [
            (Event::Deploy, "deploy"),
            (Event::Start, "start"),
            (Event::Stop, "stop"),
            (Event::Pause, "pause"),
            (Event::Unpause, "unpause"),
            (Event::Reboot, "reboot"),
            (Event::Save, "save"),
            (Event::Restore, "restore"),
            (Event::Undeploy, "undeploy"),
            (Event::Destroy, "destroy"),
        ];
        OPS.iter().filter(|(e, _)| self.on(*e).is_some()).map(|(_, n)| *n).collect()
    }

    /// Is a VM defined on the host in this state (or may one be)?
    pub fn has_vm(self) -> bool {
        matches!(self, State::Staged | State::Running | State::Paused | State::Stopping | State::Saving | State::Restoring)
    }

    /// The seed's image-state view.
    pub fn image_state(self) -> ImageState {
        match self {
            State::Running | State::Stopping => ImageState::Running,
            State::Paused | State::Saving => ImageState::Paused,
            State::Corrupted => ImageState::Corrupted,
            State::Unstaged | State::Staging | State::Staged | State::Saved | State::Restoring | State::Destroyed => {
                ImageState::Shutdown
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Unstaged => "Unstaged",
            State::Staging => "Staging",
            State::Staged => "Staged",
            State::Running => "Running",
            State::Paused => "Paused",
            State::Saved => "Saved",
            State::Stopping => "Stopping",
            State::Saving => "Saving",
            State::Restoring => "Restoring",
            State::Corrupted => "Corrupted",
            State::Destroyed => "Destroyed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: [Event; 15] = [
        Event::Deploy,
        Event::StagingDone,
        Event::StagingFailed,
        Event::Start,
        Event::Stop,
        Event::Pause,
        Event::Unpause,
        Event::Save,
        Event::Restore,
        Event::Undeploy,
        Event::Reboot,
        Event::Done,
        Event::Failed,
        Event::Fail,
        Event::Destroy,
    ];

    #[test]
    fn every_live_state_can_be_destroyed_and_destroyed_is_terminal() {
        for s in State::ALL {
            if s == State::Destroyed {
                assert!(EVENTS.iter().all(|e| s.on(*e).is_none()));
            } else {
                assert_eq!(s.on(Event::Destroy), Some(State::Destroyed), "{s:?}");
            }
        }
    }

    #[test]
    fn corrupted_allows_only_cleanup() {
        for e in EVENTS {
            let expect = match e {
                Event::Destroy => Some(State::Destroyed),
                Event::Undeploy => Some(State::Unstaged),
                _ => None,
            };
            assert_eq!(State::Corrupted.on(e), expect, "{e:?}");
        }
        assert_eq!(State::Corrupted.allowed_operations(), vec!["undeploy", "destroy"]);
    }

    #[test]
    fn the_happy_path() {
        let mut s = State::Unstaged;
        for e in [
            Event::Deploy,
            Event::StagingDone,
            Event::Start,
            Event::Pause,
            Event::Unpause,
            Event::Save,
            Event::Done,
            Event::Restore,
            Event::Done,
            Event::Reboot,
            Event::Stop,
            Event::Done,
            Event::Start,
            Event::Undeploy,
        ] {
            s = s.on(e).unwrap_or_else(|| panic!("{s:?} refused {e:?}"));
        }
        assert_eq!(s, State::Unstaged);
        assert_eq!(State::Unstaged.on(Event::Start), None);
        assert_eq!(State::Running.image_state(), ImageState::Running);
        assert_eq!(State::Staged.allowed_operations(), vec!["start", "undeploy", "destroy"]);
        assert_eq!(State::Stopping.allowed_operations(), vec!["destroy"], "a transitional state waits for its work");
        assert_eq!(State::Saving.on(Event::Failed), Some(State::Running));
        assert_eq!(State::Restoring.on(Event::Failed), Some(State::Saved));
    }

    #[test]
    fn a_failed_staging_can_be_retried() {
        let s = State::Unstaged.on(Event::Deploy).unwrap();
        assert_eq!(s, State::Staging);
        assert_eq!(s.on(Event::StagingFailed), Some(State::Unstaged));
        assert_eq!(s.on(Event::Deploy), None, "no second deploy while staging");
        assert_eq!(s.on(Event::Undeploy), None, "no undeploy while staging");
        assert_eq!(State::Staged.on(Event::StagingFailed), None);
    }
}
