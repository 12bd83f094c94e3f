package storage

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"

	"github.com/minio/minio-go/v7"
)

func TestClassify(t *testing.T) {
	refused := &url.Error{Op: "Put", URL: "http://127.0.0.1:9/b/k", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	s3err := func(code string, status int) error {
		if code == "" {
			return minio.ErrorResponse{StatusCode: status}
		}
		return minio.ErrorResponse{Code: code, Message: "msg for " + code + ".", StatusCode: status}
	}
	for _, tc := range []struct {
		name string
		err  error
		kind error // nil: retryable
		msg  string
	}{
		{"no such key", s3err("NoSuchKey", 404), ErrNotExist, "msg for NoSuchKey (NoSuchKey)"},
		{"access denied", s3err("AccessDenied", 403), ErrPermanent, "msg for AccessDenied (AccessDenied)"},
		{"no such bucket", s3err("NoSuchBucket", 404), ErrPermanent, ""},
		{"bad access key", s3err("InvalidAccessKeyId", 403), ErrPermanent, ""},
		{"bad secret", s3err("SignatureDoesNotMatch", 403), ErrPermanent, ""},
		{"minio disk full", s3err("XMinioStorageFull", 507), ErrPermanent, ""},
		{"other 4xx", s3err("InvalidRequest", 400), ErrPermanent, ""},
		{"wrapped", fmt.Errorf("stat: %w", s3err("AccessDenied", 403)), ErrPermanent, ""},
		{"slow down", s3err("SlowDown", 503), nil, ""},
		{"internal error", s3err("InternalError", 500), nil, ""},
		{"bad gateway", s3err("", 502), nil, "HTTP status 502"},
		{"request timeout", s3err("RequestTimeout", 400), nil, ""},
		{"too many requests", s3err("", 429), nil, ""},
		{"connection refused", refused, nil, "dial tcp: connection refused"},
		{"unknown CA", &url.Error{Op: "Get", URL: "https://x", Err: x509.UnknownAuthorityError{}}, ErrPermanent, "TLS: "},
		{"plain", errors.New("unexpected EOF"), nil, "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := classify(tc.err)
			for _, k := range []error{ErrNotExist, ErrPermanent, ErrLocked} {
				if errors.Is(got, k) != (k == tc.kind) {
					t.Errorf("classify(%v) = %v; errors.Is(%v) = %v", tc.err, got, k, errors.Is(got, k))
				}
			}
			if !errors.Is(got, tc.err) && !errors.Is(got, errors.Unwrap(tc.err)) {
				t.Errorf("classify(%v) lost the cause", tc.err)
			}
			if tc.msg != "" && !strings.Contains(got.Error(), tc.msg) {
				t.Errorf("message %q, want it to contain %q", got, tc.msg)
			}
		})
	}
}

func TestReadPartWrappedEOFIsAnError(t *testing.T) {
	buf := make([]byte, 8)
	truncated := fmt.Errorf("decompress: %w", io.ErrUnexpectedEOF)
	for _, tc := range []struct {
		name    string
		r       io.Reader
		n       int
		done    bool
		wantErr error
	}{
		{"full", strings.NewReader("0123456789"), 8, false, nil},
		{"short", strings.NewReader("0123"), 4, true, nil},
		{"empty", strings.NewReader(""), 0, true, nil},
		{"wrapped EOF", io.MultiReader(strings.NewReader("01"), iotest.ErrReader(truncated)), 2, false, truncated},
	} {
		n, done, err := readPart(tc.r, buf)
		if n != tc.n || done != tc.done || (tc.wantErr == nil) != (err == nil) || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
			t.Errorf("%s: readPart = %d, %v, %v; want %d, %v, %v", tc.name, n, done, err, tc.n, tc.done, tc.wantErr)
		}
	}
}
