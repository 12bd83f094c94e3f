package storage

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/minio/minio-go/v7"
)

// fatalAtStart reports errors that prove the configuration wrong: no such
// bucket, unknown key, wrong secret, untrusted certificate. Other refusals
// of the lock question (AccessDenied from a least-privilege policy, a server
// that knows no Object Lock) are reported when they matter.
func fatalAtStart(err error) bool {
	switch s3Code(err) {
	case "NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidBucketName":
		return true
	}
	return isTLSErr(err)
}

func s3Code(err error) string {
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		return er.Code
	}
	return ""
}

// classify decides what an error from minio-go means. Not-found becomes
// ErrNotExist; a failed If-None-Match becomes ErrExist; answers that another
// attempt cannot change (bad credentials, no bucket, denied, refused TLS)
// become ErrPermanent; anything else, such as a refused or reset
// connection, a timeout or a 5xx, stays retryable.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var stop noRetry
	if errors.As(err, &stop) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		switch er.Code {
		case "NoSuchKey", "NoSuchVersion":
			return mark(ErrNotExist, err, describe(err))
		case "PreconditionFailed":
			// The only condition kdr sends is If-None-Match: * (IfAbsent).
			return mark(ErrExist, err, fmt.Sprintf("%v: %s", ErrExist, describe(err)))
		case "RequestTimeout", "Throttling", "ThrottlingException", "RequestLimitExceeded",
			"RequestThrottled", "SlowDown", "SlowDownRead", "SlowDownWrite", "InternalError",
			"ExpiredToken", "ExpiredTokenException", "ServiceUnavailable":
			return mark(nil, err, describe(err))
		}
		switch {
		case er.StatusCode == http.StatusPreconditionFailed,
			strings.Contains(er.Message, "pre-conditions you specified did not hold"):
			return mark(ErrExist, err, fmt.Sprintf("%v: %s", ErrExist, describe(err)))
		case er.Code == "NoSuchBucket", er.Code == "AccessDenied", er.Code == "InvalidAccessKeyId",
			er.Code == "SignatureDoesNotMatch", er.Code == "XMinioStorageFull",
			er.StatusCode >= 400 && er.StatusCode < 500 && er.StatusCode != 408 && er.StatusCode != 429 && er.StatusCode != 499:
			return mark(ErrPermanent, err, describe(err))
		case er.StatusCode == 0 && er.Code != "":
			// Refused by minio-go before sending (invalid argument).
			return mark(ErrPermanent, err, describe(err))
		}
		return mark(nil, err, describe(err))
	}
	if isTLSErr(err) {
		return mark(ErrPermanent, err, "TLS: "+describe(err))
	}
	return mark(nil, err, describe(err))
}

// isTLSErr reports a TLS setup that cannot work: a certificate the client
// does not trust, or one side speaking TLS and the other not.
func isTLSErr(err error) bool {
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		record    tls.RecordHeaderError
	)
	return errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &invalid) || errors.As(err, &record) ||
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}

// describe makes a one-line message: the S3 error's message and code, or
// the network error without the request URL around it.
func describe(err error) string {
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		msg := strings.TrimSuffix(er.Message, ".")
		switch {
		case msg == "" && er.Code == "":
			return fmt.Sprintf("HTTP status %d", er.StatusCode)
		case msg == "":
			return er.Code
		case er.Code == "":
			return msg
		}
		return fmt.Sprintf("%s (%s)", msg, er.Code)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}
