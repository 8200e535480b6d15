//! Routes declared once: each with its method, path, function, what it
//! demands ([`Access`]) and its handler. A function's [`Routes`] give both its
//! axum router and the table [`super::policy`] enforces; the OpenAPI document
//! and the SAM template are tested against the same table.

use std::sync::Arc;

use axum::{
    Router,
    handler::Handler,
    routing::{MethodFilter, on},
};
use http::Method;

use super::policy::{Access, Route};
use crate::{AppState, state::Early};

/// A function's routes: the declarations and the router built from them.
#[derive(Clone)]
pub struct Routes {
    function: &'static str,
    router: Router<AppState>,
    table: Vec<Route>,
}

impl Routes {
    /// No routes yet, for the function (binary) `function`.
    pub fn new(function: &'static str) -> Self {
        Routes {
            function,
            router: Router::new(),
            table: Vec::new(),
        }
    }

    /// What the first request of this function starts opening early ([`super::policy::early`]).
    pub fn early(&self) -> Early {
        super::policy::early(&self.table)
    }

    /// Declares `method path` with its access rule and handler.
    pub fn route<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        access: Access,
        handler: H,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        self.router = self.router.route(path, on(filter, handler));
        self.table.push(Route {
            function: self.function,
            method,
            path,
            access,
        });
        self
    }

    /// Changes the router of the routes declared so far (e.g. axum's `route_layer`).
    pub fn with_router(mut self, map: impl FnOnce(Router<AppState>) -> Router<AppState>) -> Self {
        self.router = map(self.router);
        self
    }

    /// Both functions' routes (the dev gateway and tests serve every function at once).
    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// What is declared.
    pub fn table(&self) -> &[Route] {
        &self.table
    }

    /// The service: these routes behind their policies and the common layers.
    pub fn serve(self, state: AppState) -> Router {
        super::serve(self.router, Arc::from(self.table), state)
    }
}
