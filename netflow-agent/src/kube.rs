//! The Kubernetes API client, as every part that talks to the cluster makes
//! it: the live inventory's watches, `graph pull` and `policy apply`.

use std::path::Path;

use kube::{
    Client,
    config::{KubeConfigOptions, Kubeconfig},
};

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot read kubeconfig {path}")]
    Kubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error(
        "no cluster to watch ({0}); run inside the cluster, give --kubeconfig FILE, or give a static --inventory FILE"
    )]
    NoCluster(String),
    #[error("cannot connect to the Kubernetes API")]
    Client(#[source] kube::Error),
}

/// A client from `--kubeconfig FILE`, or in-cluster (the ServiceAccount
/// token), or the user's `~/.kube/config`. It retries what the API server
/// calls transient (429, 503, 504) with a backoff.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, KubeError> {
    Client::try_from(config(kubeconfig).await?).map_err(KubeError::Client)
}

/// Like [`client`], without retries: for requests whose 503 means "that
/// pod does not answer" (a port-forward to a pod), where waiting does not help.
pub async fn client_without_retries(kubeconfig: Option<&Path>) -> Result<Client, KubeError> {
    let mut config = config(kubeconfig).await?;
    config.default_retry = false;
    Client::try_from(config).map_err(KubeError::Client)
}

async fn config(kubeconfig: Option<&Path>) -> Result<kube::Config, KubeError> {
    Ok(match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|source| KubeError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            })?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|source| KubeError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?
        }
        None => kube::Config::infer()
            .await
            .map_err(|err| KubeError::NoCluster(err.to_string()))?,
    })
}

/// An API error for people: the status code and the server's message,
/// without the Debug dump of the Status object.
pub fn describe(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => {
            format!("{} {}: {}", status.code, status.reason, status.message)
        }
        other => other.to_string(),
    }
}
