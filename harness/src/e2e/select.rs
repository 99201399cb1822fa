//! Which scenarios a run takes: every filter at once (feature files, a name,
//! a shard, a tag expression).

use std::path::PathBuf;

use cucumber::gherkin::{Feature, Rule, Scenario, tagexpr::TagOperation};
use cucumber::tag::Ext as _;

use super::Shard;

#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Canonical paths of the feature files to run; all when empty.
    pub features: Vec<PathBuf>,
    pub name: Option<String>,
    pub shard: Option<Shard>,
    pub tags: Option<TagOperation>,
}

impl Selection {
    pub fn takes(&self, feature: &Feature, rule: Option<&Rule>, scenario: &Scenario) -> bool {
        let path = feature.path.as_deref().and_then(|p| std::fs::canonicalize(p).ok());
        let chosen = self.features.is_empty() || path.as_ref().is_some_and(|p| self.features.contains(p));
        let named = self.name.as_deref().is_none_or(|n| scenario.name.contains(n));
        let sharded = self.shard.is_none_or(|s| s.takes(&feature.name, &scenario.name));
        // Tags as cucumber reads them: the feature's, the rule's, the scenario's.
        let tagged = self
            .tags
            .as_ref()
            .is_none_or(|t| t.eval(feature.tags.iter().chain(rule.iter().flat_map(|r| &r.tags)).chain(&scenario.tags)));
        chosen && named && sharded && tagged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cucumber::gherkin::GherkinEnv;

    fn resilience() -> Feature {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/resilience.feature");
        Feature::parse_path(path, GherkinEnv::default()).unwrap()
    }

    fn taken(selection: &Selection) -> usize {
        let feature = resilience();
        feature.scenarios.iter().filter(|s| selection.takes(&feature, None, s)).count()
    }

    #[test]
    fn a_tag_expression_works_with_the_other_filters_not_instead_of_them() {
        let tags = |t: &str| Selection { tags: Some(t.parse().unwrap()), ..Selection::default() };
        assert_eq!(taken(&Selection::default()), 5, "the resilience feature's five scenarios");
        assert_eq!(taken(&tags("@resilience")), 5, "the feature's tags count");
        assert_eq!(taken(&tags("not @serial")), 0);
        let named = Selection { name: Some("Monitoring catches up".into()), ..tags("@resilience") };
        assert_eq!(taken(&named), 1, "a name narrows a tagged selection");
        let shards: Vec<usize> = (1..=3)
            .map(|i| taken(&Selection { shard: Some(Shard { index: i, count: 3 }), ..tags("@serial") }))
            .collect();
        assert_eq!(shards.iter().sum::<usize>(), 5, "each shard takes its part of a tagged selection: {shards:?}");
        assert!(shards.iter().all(|&n| n < 5), "no shard takes them all: {shards:?}");
    }
}
