//! Where a builder is reached: the config's `[[builder]]` entry wins over the endpoint and
//! driver the store recorded when the builder's runs were.

use crate::config::Config;
use crate::error::RemoteError;
use crate::model::Driver;
use crate::remote::buildkit::BuildkitClient;
use crate::report::escape::Term;

/// The endpoint and driver to reach a builder: the config wins over what the store recorded.
pub fn builder_endpoint(
    config: &Config,
    builder: &str,
    endpoint: Option<&str>,
    driver: Option<Driver>,
) -> Option<(String, Driver)> {
    match config.builder(builder) {
        Some(b) => Some((
            b.endpoint.clone(),
            b.driver.or(driver).unwrap_or(Driver::Docker),
        )),
        None => endpoint.map(|e| (e.to_owned(), driver.unwrap_or(Driver::Docker))),
    }
}

/// [`builder_endpoint`], or the error that says how to fix its absence.
pub fn require_endpoint(
    config: &Config,
    builder: &str,
    endpoint: Option<&str>,
    driver: Option<Driver>,
) -> Result<(String, Driver), RemoteError> {
    builder_endpoint(config, builder, endpoint, driver).ok_or_else(|| {
        RemoteError::local(format!(
            "no endpoint known for builder `{builder}`: add it to the config",
            builder = Term(builder)
        ))
    })
}

/// Connects to a builder's BuildKit as the config and the store know it.
pub async fn connect_builder(
    config: &Config,
    builder: &str,
    endpoint: Option<&str>,
    driver: Option<Driver>,
) -> Result<BuildkitClient, RemoteError> {
    let (endpoint, driver) = require_endpoint(config, builder, endpoint, driver)?;
    BuildkitClient::connect(&endpoint, driver).await
}
