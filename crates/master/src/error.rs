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
    /// No leader, no live worker, or leadership changing: retry later.
    #[error("{0}")]
    Unavailable(String),
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
            ApiError::Unavailable(_) => 503,
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
            ApiError::Unavailable(_) => tonic::Code::Unavailable,
        };
        tonic::Status::new(code, self.to_string())
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
        ];
        let statuses: Vec<u16> = all.iter().map(ApiError::http_status).collect();
        assert_eq!(statuses, [400, 409, 404, 503, 401, 429, 500, 413]);
        for e in all {
            assert_eq!(ApiError::from_status(&e.to_status()), e);
        }
    }
}
