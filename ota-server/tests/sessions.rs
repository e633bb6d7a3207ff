//! Dashboard sessions over HTTP, on both stores: signing in sets an `HttpOnly`, `SameSite=Strict`
//! cookie that stands for the token (role included) on the management API; changes need the
//! session's CSRF token; signing out and revoking the token end it; a session opened on one
//! replica is valid on another; the dashboard's page carries its Content-Security-Policy.

mod common;

use common::{Backend, Reply, Server};
use serde_json::{Value, json};

fn sign_in(server: &Server, token: &str) -> Reply {
    let body = serde_json::to_vec(&json!({ "token": token })).unwrap();
    server.request("POST", "/api/v1/session", None, Some("application/json"), Some(&body), &[])
}

/// The `Cookie` header for the session `reply` opened.
fn cookie_of(reply: &Reply) -> String {
    let set = reply.header("set-cookie").expect("a Set-Cookie header");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attribute), "{set}");
    }
    set.split(';').next().unwrap().to_owned()
}

/// A request with the session cookie (and the CSRF token, if given), no bearer token.
fn with_session(
    server: &Server,
    method: &str,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut headers = vec![("cookie", cookie)];
    if let Some(c) = csrf {
        headers.push(("x-csrf-token", c));
    }
    let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
    let content_type = bytes.as_ref().map(|_| "application/json");
    server.request(method, path, None, content_type, bytes.as_deref(), &headers)
}

fn sessions(backend: Backend) {
    let server = Server::start_on(backend);
    let opened = sign_in(&server, &server.admin);
    assert_eq!(opened.status, 200, "{}", opened.json());
    let (cookie, csrf) = (cookie_of(&opened), opened.json()["csrf"].as_str().unwrap().to_owned());
    assert_eq!(opened.json()["role"], "admin");

    // Reads with the cookie alone; changes only with the CSRF token.
    let r = with_session(&server, "GET", "/api/v1/environments", &cookie, None, None);
    assert_eq!(r.status, 200);
    let new = json!({"name": "dash-qa", "role": "qa"});
    for wrong in [None, Some("00")] {
        let r = with_session(&server, "POST", "/api/v1/tokens", &cookie, wrong, Some(new.clone()));
        assert_eq!((r.status, r.code()), (403, "csrf".to_owned()), "{}", r.json());
    }
    let tokens = server.get("/api/v1/tokens", &server.admin).json();
    assert!(tokens.as_array().unwrap().iter().all(|t| t["name"] != "dash-qa"), "nothing made");
    let r = with_session(&server, "POST", "/api/v1/tokens", &cookie, Some(&csrf), Some(new));
    assert_eq!(r.status, 201, "{}", r.json());
    let qa_token = r.json()["token"].as_str().unwrap().to_owned();
    let qa_id = r.json()["info"]["id"].as_str().unwrap().to_owned();

    // A qa session is refused what a qa token is refused, CSRF token or not.
    let qa = sign_in(&server, &qa_token);
    let (qa_cookie, qa_csrf) = (cookie_of(&qa), qa.json()["csrf"].as_str().unwrap().to_owned());
    let r = with_session(
        &server,
        "POST",
        "/api/v1/tokens",
        &qa_cookie,
        Some(&qa_csrf),
        Some(json!({"name": "x", "role": "admin"})),
    );
    assert_eq!((r.status, r.code()), (403, "forbidden".to_owned()), "{}", r.json());
    // Another session's CSRF token is not this one's.
    let r = with_session(&server, "DELETE", "/api/v1/session", &qa_cookie, Some(&csrf), None);
    assert_eq!((r.status, r.code()), (403, "csrf".to_owned()));
    // Revoking its token ends the session.
    assert_eq!(
        server
            .request(
                "DELETE",
                &format!("/api/v1/tokens/{qa_id}"),
                Some(&server.admin),
                None,
                None,
                &[]
            )
            .status,
        200
    );
    let r = with_session(&server, "GET", "/api/v1/environments", &qa_cookie, None, None);
    assert_eq!(r.status, 401);

    // Device tokens and unknown tokens do not sign in.
    let device = server.enroll("dash-1", "test");
    assert_eq!(sign_in(&server, &device).code(), "device_token");
    assert_eq!(sign_in(&server, "fwm_nonsense").status, 401);

    // The page is served with its policy.
    let page = server.request("GET", "/ui/", None, None, None, &[]);
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");

    // Signing out ends it.
    let r = with_session(&server, "DELETE", "/api/v1/session", &cookie, Some(&csrf), None);
    assert_eq!(r.status, 204);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    let r = with_session(&server, "GET", "/api/v1/session", &cookie, None, None);
    assert_eq!(r.status, 401);
}

both_backends!(sessions);

/// Two replicas on one PostgreSQL database: a session opened on one works on the other, and
/// ends on both when signed out on either.
#[test]
fn a_session_is_valid_on_every_replica() {
    let one = Server::start_on(Backend::Postgres);
    let two = one.replica();
    let opened = sign_in(&one, &one.admin);
    let (cookie, csrf) = (cookie_of(&opened), opened.json()["csrf"].as_str().unwrap().to_owned());
    let r = with_session(&two, "GET", "/api/v1/session", &cookie, None, None);
    assert_eq!((r.status, r.json()["csrf"].as_str()), (200, Some(csrf.as_str())));
    let r = with_session(&two, "DELETE", "/api/v1/session", &cookie, Some(&csrf), None);
    assert_eq!(r.status, 204);
    let r = with_session(&one, "GET", "/api/v1/environments", &cookie, None, None);
    assert_eq!(r.status, 401);
}
