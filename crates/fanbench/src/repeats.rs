//! How sure a capacity limit is: the steps that decide it, run again (`capacity --repeat N`).
//!
//! One step per rate cannot tell a knee from noise: a rate near the limit may pass once and fail
//! the next time. After a search has bracketed its limit between the last rate that passed and
//! the first that failed, [`settle`] runs those two rates until each has N runs. The limit then
//! lies in an interval `[low, high]`: low the highest rate every one of whose runs passed, high
//! the lowest rate every one of whose runs failed. When a repeat disagrees (the last pass fails
//! once, or the first fail passes once), the bracket widens to the next rate the search ran on
//! that side, which is run N times too, and so on until a rate agrees with itself or the search
//! ran no further rate there (that end is then unknown).
//!
//! The point estimate is read by majority, so one unlucky run does not move it: the first fail
//! is the lowest rate most of whose runs did not pass, the limit the highest rate below it most
//! of whose runs passed.
//!
//! A driver-limited run is no answer: it neither passes a rate for `low` nor fails one for
//! `high`, so an interval with one never looks surer than it is.
//!
//! Pure: the runs come from an oracle, so the tests run no load.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::capacity::{Found, Verdict};

/// A limit after its repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// The highest rate most of whose runs passed, below `fail`.
    pub pass: Option<u32>,
    /// The lowest rate most of whose runs did not pass.
    pub fail: Option<u32>,
    /// `[low, high]`: the highest rate that passed every run, the lowest that failed every run.
    pub ci: [Option<u32>; 2],
    /// Every run of every rate, in the order run (repeat 0 first), by rate.
    pub runs: BTreeMap<u32, Vec<Verdict>>,
}

/// Settles `found` by running the rates that decide it until each has `repeats` runs.
/// `run(rate, k)` runs (or recalls) the `k`-th run of `rate`, `k` ≥ 1; the search's own run is
/// `found.tried`'s.
pub fn settle(
    found: &Found,
    repeats: u32,
    mut run: impl FnMut(u32, u32) -> Result<Verdict>,
) -> Result<Settled> {
    let mut runs: BTreeMap<u32, Vec<Verdict>> = BTreeMap::new();
    for &(rate, verdict) in &found.tried {
        runs.entry(rate).or_insert_with(|| vec![verdict]);
    }
    let repeats = repeats.max(1) as usize;
    let mut fill = |runs: &mut BTreeMap<u32, Vec<Verdict>>, rate: u32| -> Result<()> {
        let verdicts = runs.entry(rate).or_default();
        while verdicts.len() < repeats {
            let k = verdicts.len() as u32;
            verdicts.push(run(rate, k)?);
        }
        Ok(())
    };
    // Each side in turn: from the search's bracket outwards over the rates it ran that answered
    // the same way the first time, until one answers the same way every time.
    let first = |runs: &BTreeMap<u32, Vec<Verdict>>, rate: u32| runs[&rate][0];
    let below: Vec<u32> = runs
        .keys()
        .rev()
        .copied()
        .filter(|&r| found.pass.is_some_and(|p| r <= p) && first(&runs, r) == Verdict::Pass)
        .collect();
    let mut low = None;
    for rate in below {
        fill(&mut runs, rate)?;
        if runs[&rate].iter().all(|v| *v == Verdict::Pass) {
            low = Some(rate);
            break;
        }
    }
    let above: Vec<u32> = runs
        .keys()
        .copied()
        .filter(|&r| found.fail.is_some_and(|f| r >= f) && first(&runs, r) == Verdict::Fail)
        .collect();
    let mut high = None;
    for rate in above {
        fill(&mut runs, rate)?;
        if runs[&rate].iter().all(|v| *v == Verdict::Fail) {
            high = Some(rate);
            break;
        }
    }
    let (pass, fail) = by_majority(&runs);
    Ok(Settled {
        pass,
        fail,
        ci: [low, high],
        runs,
    })
}

/// Most of a rate's runs passed.
fn mostly_passed(verdicts: &[Verdict]) -> bool {
    let passed = verdicts.iter().filter(|v| **v == Verdict::Pass).count();
    passed * 2 > verdicts.len()
}

/// The first fail (the lowest rate most of whose runs did not pass, among those with a failing
/// run: a rate that was only ever driver-limited says nothing) and the limit below it.
fn by_majority(runs: &BTreeMap<u32, Vec<Verdict>>) -> (Option<u32>, Option<u32>) {
    let fail = runs
        .iter()
        .find(|(_, v)| !mostly_passed(v) && v.contains(&Verdict::Fail))
        .map(|(r, _)| *r);
    let pass = runs
        .iter()
        .rev()
        .filter(|(r, _)| fail.is_none_or(|f| **r < f))
        .find(|(_, v)| mostly_passed(v))
        .map(|(r, _)| *r);
    (pass, fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::{SearchPlan, search};
    use results::capacity::Stop;

    fn plan() -> SearchPlan {
        SearchPlan {
            start: 8,
            factor: 2.0,
            resolution: 0.1,
            max_steps: 20,
        }
    }

    /// A design whose verdict at a rate is given per run: `flaky` maps (rate, run) to a verdict
    /// other than the steady one (pass up to `limit`).
    fn design(
        limit: u32,
        flaky: &'static [(u32, u32, Verdict)],
    ) -> impl FnMut(u32, u32) -> Result<Verdict> {
        move |rate, k| {
            Ok(flaky
                .iter()
                .find(|(r, run, _)| *r == rate && *run == k)
                .map(|(_, _, v)| *v)
                .unwrap_or(if rate <= limit {
                    Verdict::Pass
                } else {
                    Verdict::Fail
                }))
        }
    }

    fn settled(limit: u32, flaky: &'static [(u32, u32, Verdict)], repeats: u32) -> Settled {
        let mut d = design(limit, flaky);
        let found = search(&plan(), |r| d(r, 0)).unwrap();
        assert_eq!(found.stop, Stop::Converged);
        settle(&found, repeats, design(limit, flaky)).unwrap()
    }

    #[test]
    fn a_steady_design_settles_on_the_searchs_bracket_with_every_run_agreeing() {
        // 8, 16, 32, 64 fail, 48 fail, 40 pass, 44 pass: the bracket is 44..48.
        let s = settled(45, &[], 3);
        assert_eq!((s.pass, s.fail), (Some(44), Some(48)));
        assert_eq!(s.ci, [Some(44), Some(48)]);
        assert_eq!(s.runs[&44].len(), 3);
        assert_eq!(s.runs[&48].len(), 3);
        // Rates away from the bracket are not run again.
        assert_eq!(s.runs[&16].len(), 1);
        assert_eq!(
            results::capacity::wider_than(Some(s.ci), plan().resolution),
            Some(false)
        );
    }

    #[test]
    fn one_run_means_no_repeat_and_the_searchs_own_bracket() {
        let s = settled(45, &[], 1);
        assert_eq!(s.ci, [Some(44), Some(48)]);
        assert!(s.runs.values().all(|v| v.len() == 1));
    }

    #[test]
    fn a_last_pass_that_fails_once_widens_the_interval_down_but_keeps_the_majority_limit() {
        // 44 fails on its second run: low falls to 40, whose three runs all pass; 44 still
        // passed two of three, so it stays the limit.
        let s = settled(45, &[(44, 1, Verdict::Fail)], 3);
        assert_eq!(s.runs[&44], [Verdict::Pass, Verdict::Fail, Verdict::Pass]);
        assert_eq!(s.ci, [Some(40), Some(48)]);
        assert_eq!((s.pass, s.fail), (Some(44), Some(48)));
        assert_eq!(s.runs[&40].len(), 3);
        // 8 wide on 40 is 20 %, beyond the 10 % resolution: the repeats disagree.
        assert_eq!(
            results::capacity::wider_than(Some(s.ci), plan().resolution),
            Some(true)
        );
    }

    #[test]
    fn a_first_fail_that_passes_twice_moves_the_limit_up_by_majority() {
        // 48 failed in the search, then passed twice: most of its runs passed.
        let s = settled(45, &[(48, 1, Verdict::Pass), (48, 2, Verdict::Pass)], 3);
        assert_eq!(s.runs[&48], [Verdict::Fail, Verdict::Pass, Verdict::Pass]);
        assert_eq!((s.pass, s.fail), (Some(48), Some(64)));
        // 64 failed every run, 44 passed every run.
        assert_eq!(s.ci, [Some(44), Some(64)]);
    }

    #[test]
    fn a_driver_limited_repeat_answers_nothing() {
        let s = settled(45, &[(44, 2, Verdict::DriverLimited)], 3);
        // 44 did not pass every run, so low is the next rate down; its majority still passed.
        assert_eq!(s.ci, [Some(40), Some(48)]);
        assert_eq!(s.pass, Some(44));
    }

    #[test]
    fn an_end_with_no_rate_that_agreed_with_itself_is_unknown() {
        // Every rate the search failed at passes on a later run: no high end.
        let s = settled(45, &[(48, 1, Verdict::Pass), (64, 1, Verdict::Pass)], 3);
        assert_eq!(s.ci, [Some(44), None]);
        assert_eq!(
            results::capacity::wider_than(Some(s.ci), plan().resolution),
            Some(true)
        );
    }
}
