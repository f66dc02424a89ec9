//! `diff`: what a change to the config repository does to a fleet, before it is merged. Two
//! compiled revisions render every distinct attribute set once (sample agents, or the live
//! fleet's sets with their counts); sets whose hash does not change are counted, the others are
//! grouped by what they run before and after, each group with its file diffs and the findings
//! read from the parsed configs. The reports (human, JSON, Markdown) are renderings of one
//! [`Comparison`].

pub mod compare;
pub mod findings;
pub mod human;
pub mod live;
pub mod markdown;
pub mod unified;
pub mod worktree;

pub use compare::{compare, AgentSet, Comparison, Group, Side, Summary};
