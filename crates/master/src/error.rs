//! API errors: one code enum that maps to both an HTTP status and a gRPC code, so the two
//! APIs always agree.

/// What went wrong with an API call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Bad body, bad name, unknown task without an inline spec, invalid spec.
    #[error("{0}")]
    InvalidArgument(String),
    /// The resource already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// No leader, or leadership changing: retry later.
    #[error("{0}")]
    Unavailable(String),
    /// No live worker to take a resource: retry later, but a leader's final answer (a
    /// follower does not keep forwarding it).
    #[error("{0}")]
    NoWorker(String),
    /// Missing or wrong bearer token.
    #[error("{0}")]
    Unauthenticated(String),
    /// Over the master's rate limit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The request body is larger than the master accepts.
    #[error("{0}")]
    TooLarge(String),
    /// A bug or an unexpected store failure.
    #[error("{0}")]
    Internal(String),
}

/// gRPC metadata key naming an error's kind where the code alone does not.
const ERROR_KIND: &str = "x-crawler-error";
/// [`ERROR_KIND`] of [`ApiError::NoWorker`].
const NO_WORKER: &str = "no-worker";

impl ApiError {
    /// The HTTP status for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            ApiError::InvalidArgument(_) => 400,
            ApiError::Unauthenticated(_) => 401,
            ApiError::NotFound(_) => 404,
            ApiError::AlreadyExists(_) => 409,
            ApiError::ResourceExhausted(_) => 429,
            ApiError::TooLarge(_) => 413,
            ApiError::Internal(_) => 500,
            ApiError::Unavailable(_) | ApiError::NoWorker(_) => 503,
        }
    }

    /// The gRPC status for this error.
    pub fn to_status(&self) -> tonic::Status {
        let code = match self {
            ApiError::InvalidArgument(_) => tonic::Code::InvalidArgument,
            ApiError::Unauthenticated(_) => tonic::Code::Unauthenticated,
            ApiError::NotFound(_) => tonic::Code::NotFound,
            ApiError::AlreadyExists(_) => tonic::Code::AlreadyExists,
            ApiError::ResourceExhausted(_) => tonic::Code::ResourceExhausted,
            ApiError::TooLarge(_) => tonic::Code::OutOfRange,
            ApiError::Internal(_) => tonic::Code::Internal,
            ApiError::Unavailable(_) | ApiError::NoWorker(_) => tonic::Code::Unavailable,
        };
        let mut status = tonic::Status::new(code, self.to_string());
        if let ApiError::NoWorker(_) = self {
            // The kind travels as metadata, so the receiver decides on it, not on the text.
            status.metadata_mut().insert(ERROR_KIND, tonic::metadata::MetadataValue::from_static(NO_WORKER));
        }
        status
    }

    /// The error a gRPC status stands for (the inverse of [`ApiError::to_status`]).
    pub fn from_status(s: &tonic::Status) -> ApiError {
        let m = s.message().to_owned();
        match s.code() {
            tonic::Code::InvalidArgument => ApiError::InvalidArgument(m),
            tonic::Code::Unauthenticated => ApiError::Unauthenticated(m),
            tonic::Code::NotFound => ApiError::NotFound(m),
            tonic::Code::AlreadyExists => ApiError::AlreadyExists(m),
            tonic::Code::ResourceExhausted => ApiError::ResourceExhausted(m),
            tonic::Code::OutOfRange => ApiError::TooLarge(m),
            tonic::Code::Unavailable if s.metadata().get(ERROR_KIND).is_some_and(|k| k == NO_WORKER) => {
                ApiError::NoWorker(m)
            }
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                ApiError::Unavailable(m)
            }
            _ => ApiError::Internal(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ApiError;

    #[test]
    fn http_and_grpc_agree_both_ways() {
        let all = [
            ApiError::InvalidArgument("a".into()),
            ApiError::AlreadyExists("b".into()),
            ApiError::NotFound("c".into()),
            ApiError::Unavailable("d".into()),
            ApiError::Unauthenticated("e".into()),
            ApiError::ResourceExhausted("f".into()),
            ApiError::Internal("g".into()),
            ApiError::TooLarge("h".into()),
            ApiError::NoWorker("i".into()),
        ];
        let statuses: Vec<u16> = all.iter().map(ApiError::http_status).collect();
        assert_eq!(statuses, [400, 409, 404, 503, 401, 429, 500, 413, 503]);
        for e in all {
            assert_eq!(ApiError::from_status(&e.to_status()), e);
        }
    }
}
