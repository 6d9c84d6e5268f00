//! [`Route`]: the HTTP path a producer component answers.

use std::fmt;
use std::str::FromStr;

/// Paths the host's own API answers (and everything under them); producer routes may not
/// take them.
pub(super) const RESERVED_PATHS: &[&str] = &["/queues", "/metrics", "/reload", "/dashboard"];

/// A producer's route: an exact path (`"/webhook"`), or every path under a prefix when it
/// ends in `/...` (`"/hooks/..."` answers `/hooks`, `/hooks/github`, `/hooks/a/b`…).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    /// The path, without the `/...` of a prefix route.
    path: String,
    /// Whether the route takes every path under `path`.
    prefix: bool,
}

impl Route {
    /// True if a request for `path` goes to this route.
    pub fn matches(&self, path: &str) -> bool {
        if !self.prefix {
            return path == self.path;
        }
        let base = self.path.trim_end_matches('/');
        match path.strip_prefix(base) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }

    /// How specific the route is: among routes matching a path, the most specific wins
    /// (an exact path, then the longest prefix).
    pub fn specificity(&self) -> (bool, usize) {
        (!self.prefix, self.path.len())
    }
}

impl FromStr for Route {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if !text.starts_with('/') {
            return Err(format!("`{text}` must start with `/`"));
        }
        if text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#'))
        {
            return Err(format!(
                "`{text}` must be a plain path (no spaces, `?` or `#`)"
            ));
        }
        let (path, prefix) = match text.strip_suffix("/...") {
            Some("") => ("/".to_owned(), true),
            Some(base) => (base.to_owned(), true),
            None => (text.to_owned(), false),
        };
        if path.contains("...") {
            return Err(format!(
                "`{text}`: `...` may only end a route, as in \"/hooks/...\""
            ));
        }
        let route = Route { path, prefix };
        // `/` itself is the dashboard's page (a catch-all `/...` still gets every other path).
        if route.path == "/" && !route.prefix {
            return Err(format!(
                "`{text}` is the host's dashboard; pick another path (or `/...` for every other path)"
            ));
        }
        // A catch-all such as `/...` is fine: the API's own routes are matched first.
        if let Some(reserved) = RESERVED_PATHS
            .iter()
            .find(|reserved| Route::under(reserved).matches(&route.path))
        {
            return Err(format!(
                "`{text}` overlaps the host's own API at `{reserved}`; pick another path"
            ));
        }
        Ok(route)
    }
}

impl Route {
    fn under(path: &str) -> Route {
        Route {
            path: path.to_owned(),
            prefix: true,
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.prefix, self.path.as_str()) {
            (false, path) => f.write_str(path),
            (true, "/") => f.write_str("/..."),
            (true, path) => write!(f, "{path}/..."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(text: &str) -> Route {
        text.parse().unwrap()
    }

    #[test]
    fn exact_routes_match_only_their_path() {
        let r = route("/webhook");
        assert!(r.matches("/webhook"));
        assert!(!r.matches("/webhook/x"));
        assert!(!r.matches("/webhooks"));
        assert_eq!(r.to_string(), "/webhook");
    }

    #[test]
    fn prefix_routes_match_their_subtree() {
        let r = route("/hooks/...");
        assert!(r.matches("/hooks"));
        assert!(r.matches("/hooks/github"));
        assert!(r.matches("/hooks/a/b"));
        assert!(!r.matches("/hooksx"));
        assert!(!r.matches("/other"));
        assert_eq!(r.to_string(), "/hooks/...");
        let all = route("/...");
        assert!(all.matches("/anything/at/all"));
        assert!(all.specificity() < r.specificity());
        assert!(r.specificity() < route("/hooks/github").specificity());
    }

    #[test]
    fn api_paths_are_reserved() {
        for text in [
            "/queues",
            "/queues/jobs",
            "/metrics",
            "/reload",
            "/queues/...",
            "/",
            "/dashboard",
            "/dashboard/api/summary",
        ] {
            let err = text.parse::<Route>().unwrap_err();
            assert!(
                err.contains("overlaps the host's own API") || err.contains("dashboard"),
                "{text}: {err}"
            );
        }
        // A catch-all is fine: the API's routes are matched first.
        assert!("/...".parse::<Route>().is_ok());
        assert!("/queuesx".parse::<Route>().is_ok());
    }

    #[test]
    fn malformed_routes_are_refused() {
        assert!(
            "webhook"
                .parse::<Route>()
                .unwrap_err()
                .contains("must start with `/`")
        );
        assert!("/a b".parse::<Route>().unwrap_err().contains("plain path"));
        assert!("/a?b".parse::<Route>().unwrap_err().contains("plain path"));
        assert!(
            "/a/.../b"
                .parse::<Route>()
                .unwrap_err()
                .contains("may only end")
        );
    }
}
