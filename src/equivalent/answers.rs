//! A request's answers as a distribution over what is observed (the facts of each
//! answer and its share of requests), and how two such distributions differ: the
//! comparison `meshcheck equivalent` makes, whoever computed the answers.

use std::collections::BTreeMap;

/// One observed aspect of an answer: (`status`, `200`), (`path`, `/items`), ...
pub type Fact = (&'static str, String);

/// Shares are compared in parts per million: the same split written with other
/// weights (90/10, 9/1) is the same distribution, float noise is not a difference.
const PARTS: f64 = 1_000_000.0;

/// Every distinct answer a request gets, with its share of requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answers {
    /// Facts of one answer (in the order the source lists its aspects, empty values
    /// left out) -> share in parts per million.
    shares: BTreeMap<Vec<Fact>, u64>,
}

impl Answers {
    /// From answers and their shares (0..=1); identical answers are one, their shares
    /// added (two weighted destinations reaching the same backend are one answer).
    pub fn from_shares(answers: impl IntoIterator<Item = (Vec<Fact>, f64)>) -> Answers {
        let mut summed: BTreeMap<Vec<Fact>, f64> = BTreeMap::new();
        for (facts, share) in answers {
            let facts: Vec<Fact> = facts.into_iter().filter(|(_, v)| !v.is_empty()).collect();
            *summed.entry(facts).or_default() += share;
        }
        let shares = summed
            .into_iter()
            .map(|(facts, share)| (facts, (share * PARTS).round() as u64))
            .filter(|(_, ppm)| *ppm > 0)
            .collect();
        Answers { shares }
    }

    /// The aspects whose distribution differs between `self` and `other`, in the
    /// order they are first listed; `combination` when each aspect is distributed
    /// alike but not together (the same values, paired differently).
    pub fn differing_aspects(&self, other: &Answers) -> Vec<&'static str> {
        if self == other {
            return Vec::new();
        }
        let differing: Vec<&'static str> = aspects(&[self, other])
            .into_iter()
            .filter(|a| self.marginal(a) != other.marginal(a))
            .collect();
        if differing.is_empty() {
            vec!["combination"]
        } else {
            differing
        }
    }

    /// How the values of `aspect` are shared (an answer without it counts as `""`).
    fn marginal(&self, aspect: &str) -> BTreeMap<&str, u64> {
        let mut m = BTreeMap::new();
        for (facts, ppm) in &self.shares {
            let value = facts
                .iter()
                .find(|(a, _)| *a == aspect)
                .map_or("", |(_, v)| v.as_str());
            *m.entry(value).or_default() += ppm;
        }
        m
    }

    /// One line per answer, largest share first: `[90%] status 200, path /items`.
    pub fn lines(&self) -> Vec<String> {
        let mut v: Vec<(&Vec<Fact>, u64)> = self.shares.iter().map(|(f, s)| (f, *s)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        v.into_iter()
            .map(|(facts, ppm)| {
                let facts: Vec<String> = facts.iter().map(|(a, v)| format!("{a} {v}")).collect();
                format!("[{}] {}", percent(ppm), facts.join(", "))
            })
            .collect()
    }
}

/// Every aspect named by any answer of `all`, in first-seen order.
fn aspects(all: &[&Answers]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for facts in all.iter().flat_map(|a| a.shares.keys()) {
        for (a, _) in facts {
            if !out.contains(a) {
                out.push(a);
            }
        }
    }
    out
}

/// `90%`, `33.3333%`: no more digits than the share has.
fn percent(ppm: u64) -> String {
    let whole = ppm / 10_000;
    let rest = ppm % 10_000;
    if rest == 0 {
        format!("{whole}%")
    } else {
        let frac = format!("{rest:04}");
        format!("{whole}.{}%", frac.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: &str, backend: &str, path: &str) -> Vec<Fact> {
        vec![
            ("status", status.to_string()),
            ("backend", backend.to_string()),
            ("path", path.to_string()),
        ]
    }

    #[test]
    fn the_same_split_with_other_weights_is_equal() {
        let a = Answers::from_shares([
            (answer("200", "nb-rest v1", "/items"), 0.9),
            (answer("200", "nb-rest v2", "/items"), 0.1),
        ]);
        let b = Answers::from_shares([
            (answer("200", "nb-rest v2", "/items"), 1.0 / 10.0),
            (answer("200", "nb-rest v1", "/items"), 9.0 / 10.0),
        ]);
        assert_eq!(a, b);
        assert!(a.differing_aspects(&b).is_empty());
    }

    #[test]
    fn identical_answers_are_merged() {
        let one = Answers::from_shares([(answer("200", "ui v1", "/"), 1.0)]);
        let halves = Answers::from_shares([
            (answer("200", "ui v1", "/"), 0.5),
            (answer("200", "ui v1", "/"), 0.5),
        ]);
        assert_eq!(one, halves);
    }

    #[test]
    fn a_different_path_names_only_the_path() {
        let a = Answers::from_shares([(answer("200", "nb-rest v1", "/items"), 1.0)]);
        let b = Answers::from_shares([(answer("200", "nb-rest v1", "/atlas-rest/items"), 1.0)]);
        assert_eq!(a.differing_aspects(&b), vec!["path"]);
    }

    #[test]
    fn swapped_weights_differ_in_backend() {
        let a = Answers::from_shares([
            (answer("200", "nb-rest v1", "/"), 0.9),
            (answer("200", "nb-rest v2", "/"), 0.1),
        ]);
        let b = Answers::from_shares([
            (answer("200", "nb-rest v1", "/"), 0.1),
            (answer("200", "nb-rest v2", "/"), 0.9),
        ]);
        assert_eq!(a.differing_aspects(&b), vec!["backend"]);
    }

    #[test]
    fn a_missing_aspect_differs_from_a_present_one() {
        let a = Answers::from_shares([(vec![("status", "301".into())], 1.0)]);
        let b = Answers::from_shares([(
            vec![
                ("status", "301".into()),
                ("location", "https://node/".into()),
            ],
            1.0,
        )]);
        assert_eq!(a.differing_aspects(&b), vec!["location"]);
    }

    #[test]
    fn values_paired_differently_are_a_combination_difference() {
        let a = Answers::from_shares([
            (answer("200", "a v1", "/x"), 0.5),
            (answer("200", "b v1", "/y"), 0.5),
        ]);
        let b = Answers::from_shares([
            (answer("200", "a v1", "/y"), 0.5),
            (answer("200", "b v1", "/x"), 0.5),
        ]);
        assert_eq!(a.differing_aspects(&b), vec!["combination"]);
    }

    #[test]
    fn lines_put_the_largest_share_first_and_leave_empty_facts_out() {
        let a = Answers::from_shares([
            (answer("200", "nb-rest v2", ""), 0.1),
            (answer("200", "nb-rest v1", ""), 0.9),
        ]);
        assert_eq!(
            a.lines(),
            vec![
                "[90%] status 200, backend nb-rest v1",
                "[10%] status 200, backend nb-rest v2"
            ]
        );
        assert_eq!(percent(333_333), "33.3333%");
        assert_eq!(percent(1_000_000), "100%");
    }
}
