//! The live rollout page served on `/`: one self-contained HTML document (inline CSS and
//! script, no external script, font or CDN: the fleet may have no internet). Its script polls
//! `/status` every half second and redraws; it fetches `/timeline.svg` again when the status
//! changes. Cluster data is put in the page as text nodes, never as markup.

/// The page, as served.
pub(crate) const PAGE: &str = include_str!("page.html");

#[cfg(test)]
mod tests {
    use super::PAGE;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for needle in ["http://", "https://", "src=\"//", "@import", "url("] {
            assert!(!PAGE.contains(needle), "the page refers to {needle}");
        }
        assert!(PAGE.contains("fetch('/status'"), "the page polls /status");
        assert!(
            PAGE.contains("name=\"viewport\""),
            "the page is laid out for phones"
        );
    }
}
