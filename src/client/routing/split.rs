//! A splitter as the client uses it: a weighted choice among resolvers, drawn
//! once per call. Consul's weights are percentages to 0.01; nested splitters
//! (which Consul already flattens) multiply out, so probabilities are kept to
//! 1 in a million.

/// Probabilities are counted in millionths.
pub(crate) const SCALE: u32 = 1_000_000;

/// One branch: its share and where it goes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Branch {
    /// Millionths of calls (0 never taken).
    pub(crate) share: u32,
    /// The resolver it leads to.
    pub(crate) resolver: usize,
}

/// A flattened splitter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Splitter {
    /// Consul's node name (`inventory.default`).
    pub(crate) name: String,
    branches: Vec<Branch>,
    total: u32,
}

impl Splitter {
    /// A splitter over `branches` (shares in millionths; they need not sum
    /// to [`SCALE`]: a call picks in proportion). `None` when every share is 0.
    pub(crate) fn new(name: &str, branches: Vec<Branch>) -> Option<Self> {
        let total = branches.iter().map(|branch| branch.share).sum::<u32>();
        (total > 0).then(|| Self {
            name: name.to_owned(),
            branches,
            total,
        })
    }

    /// Millionths for a `weight` in percent (Consul's 0–100, to 0.01).
    pub(crate) fn share_of(weight: f32) -> u32 {
        (f64::from(weight.clamp(0.0, 100.0)) * f64::from(SCALE) / 100.0).round() as u32
    }

    /// The resolver for a roll in `0..self.total()`.
    pub(crate) fn pick(&self, roll: u32) -> usize {
        let mut upper = 0;
        for branch in &self.branches {
            upper += branch.share;
            if roll < upper {
                return branch.resolver;
            }
        }
        // Unreachable for a roll below the total; the last branch otherwise.
        self.branches.last().map_or(0, |branch| branch.resolver)
    }

    /// The sum of the shares (the range of rolls).
    pub(crate) fn total(&self) -> u32 {
        self.total
    }

    /// Each resolver with its percentage of calls, in branch order.
    pub(crate) fn percentages(&self) -> Vec<(f64, usize)> {
        self.branches
            .iter()
            .map(|branch| {
                (
                    f64::from(branch.share) * 100.0 / f64::from(self.total),
                    branch.resolver,
                )
            })
            .collect()
    }

    /// The branches (for flattening a splitter into another).
    pub(crate) fn branches(&self) -> &[Branch] {
        &self.branches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splitter(shares: &[(f32, usize)]) -> Splitter {
        let branches = shares
            .iter()
            .map(|(weight, resolver)| Branch {
                share: Splitter::share_of(*weight),
                resolver: *resolver,
            })
            .collect();
        Splitter::new("s", branches).unwrap()
    }

    #[test]
    fn picks_in_proportion_to_hundredths_of_a_percent() {
        let split = splitter(&[(99.99, 0), (0.01, 1)]);
        assert_eq!(split.total(), SCALE);
        let to_second = (0..split.total())
            .filter(|roll| split.pick(*roll) == 1)
            .count();
        assert_eq!(to_second, 100, "0.01 % of a million rolls");
        let ninety_ten = splitter(&[(90.0, 0), (10.0, 1)]);
        assert_eq!(ninety_ten.pick(0), 0);
        assert_eq!(ninety_ten.pick(899_999), 0);
        assert_eq!(ninety_ten.pick(900_000), 1);
        assert_eq!(ninety_ten.pick(SCALE - 1), 1);
    }

    #[test]
    fn zero_weights_are_never_taken_and_all_zero_is_no_splitter() {
        let split = splitter(&[(100.0, 0), (0.0, 1)]);
        assert!((0..SCALE).step_by(997).all(|roll| split.pick(roll) == 0));
        assert_eq!(split.percentages(), [(100.0, 0), (0.0, 1)]);
        assert!(Splitter::new(
            "s",
            vec![Branch {
                share: 0,
                resolver: 0
            }]
        )
        .is_none());
    }

    #[test]
    fn weights_that_do_not_sum_to_100_pick_in_proportion() {
        let split = splitter(&[(20.2, 0), (19.8, 1)]);
        let percentages = split.percentages();
        assert!((percentages[0].0 - 50.5).abs() < 1e-9, "{percentages:?}");
        assert_eq!(split.pick(split.total() - 1), 1);
    }
}
