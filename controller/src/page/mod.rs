//! What a person watching a rollout looks at: the live page served on `/` (`html`) and the
//! timeline picture drawn from the events file (`timeline`), served on `/timeline.svg` and
//! written by `swarm-upgrade timeline` (`export`, PNG through a headless Chromium); `render`
//! draws the SVG.

pub mod export;
pub mod html;
pub mod render;
pub mod timeline;

pub use timeline::{Timeline, TimelineError};
