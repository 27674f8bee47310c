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
    Fail,
    Destroy,
}

impl State {
    pub const ALL: [State; 8] = [
        State::Unstaged,
        State::Staging,
        State::Staged,
        State::Running,
        State::Paused,
        State::Saved,
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
            (S::Corrupted, _) => None,
            (_, E::Fail) => Some(S::Corrupted),
            (S::Unstaged, E::Deploy) => Some(S::Staging),
            (S::Staging, E::StagingDone) => Some(S::Staged),
            (S::Staging, E::StagingFailed) => Some(S::Unstaged),
            (S::Staged, E::Start) => Some(S::Running),
            (S::Staged, E::Undeploy) => Some(S::Unstaged),
            (S::Running, E::Stop) => Some(S::Staged),
            (S::Running, E::Pause) => Some(S::Paused),
            (S::Running, E::Save) => Some(S::Saved),
            (S::Paused, E::Unpause) => Some(S::Running),
            (S::Paused, E::Stop) => Some(S::Staged),
            (S::Saved, E::Restore) => Some(S::Running),
            (S::Saved, E::Undeploy) => Some(S::Unstaged),
            (
                S::Unstaged | S::Staging | S::Staged | S::Running | S::Paused | S::Saved,
                E::Deploy
                | E::StagingDone
                | E::StagingFailed
                | E::Start
                | E::Stop
                | E::Pause
                | E::Unpause
                | E::Save
                | E::Restore
                | E::Undeploy,
            ) => None,
        }
    }

    /// The seed's image-state view.
    pub fn image_state(self) -> ImageState {
        match self {
            State::Running => ImageState::Running,
            State::Paused => ImageState::Paused,
            State::Corrupted => ImageState::Corrupted,
            State::Unstaged | State::Staging | State::Staged | State::Saved | State::Destroyed => ImageState::Shutdown,
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
            State::Corrupted => "Corrupted",
            State::Destroyed => "Destroyed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: [Event; 12] = [
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
            let expect = if e == Event::Destroy { Some(State::Destroyed) } else { None };
            assert_eq!(State::Corrupted.on(e), expect, "{e:?}");
        }
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
            Event::Restore,
            Event::Stop,
            Event::Undeploy,
        ] {
            s = s.on(e).unwrap_or_else(|| panic!("{s:?} refused {e:?}"));
        }
        assert_eq!(s, State::Unstaged);
        assert_eq!(State::Unstaged.on(Event::Start), None);
        assert_eq!(State::Running.image_state(), ImageState::Running);
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
