//! The operation mixes of the load benchmark and how one random roll picks
//! an action.
//!
//! Weights are integers so that picking is one `random_range` and the
//! selection is exactly testable; dropping LIST_USERS renormalises simply by
//! the total shrinking.

use std::fmt;

/// Which mix to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MixKind {
    /// LIST_CONTENT 40%, PUBLISH+DELETE 25%, DISCONNECT+CONNECT 25%,
    /// LIST_USERS 10%.
    Default,
    /// The default mix without LIST_USERS (renormalised): target 1 and 2,
    /// whose throughput must not depend on the reply size growing with N.
    NoListUsers,
    /// Only LIST_USERS: target 3 (its latency grows with N).
    ListUsersOnly,
    /// Only SEARCH for a substring hitting a few files.
    SearchOnly,
}

impl MixKind {
    pub fn name(self) -> &'static str {
        match self {
            MixKind::Default => "default",
            MixKind::NoListUsers => "no-list-users",
            MixKind::ListUsersOnly => "list-users-only",
            MixKind::SearchOnly => "search-only",
        }
    }
}

impl fmt::Display for MixKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One step of a client loop. Pairs leave the directory as they found it,
/// so that a populated server can be measured again and again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ListContent,
    /// Publish a unique temporary file, then delete it.
    PublishDelete,
    /// Disconnect a user, then connect it again.
    DisconnectConnect,
    ListUsers,
    /// SEARCH for a pattern hitting a few files (see [`crate::search`]).
    Search,
}

/// Integer weights of the actions of one mix.
#[derive(Debug, Clone)]
pub struct Mix {
    weights: Vec<(Action, u32)>,
    total: u32,
}

impl Mix {
    pub fn new(kind: MixKind) -> Mix {
        let weights = match kind {
            MixKind::Default => vec![
                (Action::ListContent, 40),
                (Action::PublishDelete, 25),
                (Action::DisconnectConnect, 25),
                (Action::ListUsers, 10),
            ],
            MixKind::NoListUsers => vec![
                (Action::ListContent, 40),
                (Action::PublishDelete, 25),
                (Action::DisconnectConnect, 25),
            ],
            MixKind::ListUsersOnly => vec![(Action::ListUsers, 1)],
            MixKind::SearchOnly => vec![(Action::Search, 1)],
        };
        let total = weights.iter().map(|(_, w)| w).sum();
        Mix { weights, total }
    }

    /// The exclusive upper bound of a roll.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// The action of `roll`, which must be in `0..self.total()` (larger
    /// rolls are clamped to the last action).
    pub fn pick(&self, roll: u32) -> Action {
        let mut rest = roll;
        for (action, weight) in &self.weights {
            if rest < *weight {
                return *action;
            }
            rest -= weight;
        }
        self.weights[self.weights.len() - 1].0
    }

    /// The fraction of actions that are `action`.
    pub fn share(&self, action: Action) -> f64 {
        let weight: u32 = self
            .weights
            .iter()
            .filter(|(a, _)| *a == action)
            .map(|(_, w)| w)
            .sum();
        f64::from(weight) / f64::from(self.total)
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::{RngExt, SeedableRng};

    use super::*;

    #[test]
    fn default_mix_boundaries() {
        let mix = Mix::new(MixKind::Default);
        assert_eq!(mix.total(), 100);
        assert_eq!(mix.pick(0), Action::ListContent);
        assert_eq!(mix.pick(39), Action::ListContent);
        assert_eq!(mix.pick(40), Action::PublishDelete);
        assert_eq!(mix.pick(64), Action::PublishDelete);
        assert_eq!(mix.pick(65), Action::DisconnectConnect);
        assert_eq!(mix.pick(89), Action::DisconnectConnect);
        assert_eq!(mix.pick(90), Action::ListUsers);
        assert_eq!(mix.pick(99), Action::ListUsers);
    }

    #[test]
    fn every_roll_maps_to_its_weight() {
        for kind in [
            MixKind::Default,
            MixKind::NoListUsers,
            MixKind::ListUsersOnly,
            MixKind::SearchOnly,
        ] {
            let mix = Mix::new(kind);
            for action in [
                Action::ListContent,
                Action::PublishDelete,
                Action::DisconnectConnect,
                Action::ListUsers,
                Action::Search,
            ] {
                let hits = (0..mix.total()).filter(|&r| mix.pick(r) == action).count();
                let expected = mix.share(action) * f64::from(mix.total());
                assert_eq!(hits as f64, expected, "{kind} {action:?}");
            }
        }
    }

    #[test]
    fn no_list_users_renormalises() {
        let mix = Mix::new(MixKind::NoListUsers);
        assert_eq!(mix.share(Action::ListUsers), 0.0);
        assert!((mix.share(Action::ListContent) - 40.0 / 90.0).abs() < 1e-12);
        assert!((mix.share(Action::PublishDelete) - 25.0 / 90.0).abs() < 1e-12);
        let total: f64 = [
            Action::ListContent,
            Action::PublishDelete,
            Action::DisconnectConnect,
        ]
        .into_iter()
        .map(|a| mix.share(a))
        .sum();
        assert!((total - 1.0).abs() < 1e-12);
    }

    #[test]
    fn list_users_only_picks_only_list_users() {
        let mix = Mix::new(MixKind::ListUsersOnly);
        assert_eq!(mix.total(), 1);
        assert_eq!(mix.pick(0), Action::ListUsers);
        assert_eq!(mix.pick(7), Action::ListUsers);
    }

    #[test]
    fn search_only_picks_only_search() {
        let mix = Mix::new(MixKind::SearchOnly);
        assert_eq!(mix.pick(0), Action::Search);
        assert_eq!(mix.share(Action::Search), 1.0);
        assert_eq!(Mix::new(MixKind::Default).share(Action::Search), 0.0);
    }

    #[test]
    fn random_rolls_follow_the_weights() {
        let mix = Mix::new(MixKind::Default);
        let mut rng = SmallRng::seed_from_u64(7);
        let n = 200_000;
        let mut list_users = 0;
        let mut list_content = 0;
        for _ in 0..n {
            match mix.pick(rng.random_range(0..mix.total())) {
                Action::ListUsers => list_users += 1,
                Action::ListContent => list_content += 1,
                _ => {}
            }
        }
        let lu = f64::from(list_users) / f64::from(n);
        let lc = f64::from(list_content) / f64::from(n);
        assert!((lu - 0.10).abs() < 0.005, "LIST_USERS share {lu}");
        assert!((lc - 0.40).abs() < 0.005, "LIST_CONTENT share {lc}");
    }
}
