package manifest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/kdr-io/kdr/storage"
)

// PutSigned stores data under key with its detached signature beside it.
// The signature goes first, so an object that is visible is one whose
// signature can be read; a crash between the two leaves an unsigned
// signature file, which no reader takes for an object.
func PutSigned(ctx context.Context, t storage.Target, key string, data []byte, namespace string, s *Signer, opts storage.PutOptions) error {
	if s == nil {
		return errors.New("no signing key configured (signing.keyFile): readers trust only signed objects")
	}
	sig, err := s.Sign(data, namespace)
	if err != nil {
		return err
	}
	sigOpts := opts
	sigOpts.ContentType = "text/plain"
	if err := t.Put(ctx, SignatureKey(key), bytes.NewReader(sig), sigOpts); err != nil {
		return fmt.Errorf("store %s on target %s: %w", SignatureKey(key), t.Name(), err)
	}
	if err := t.Put(ctx, key, bytes.NewReader(data), opts); err != nil {
		return fmt.Errorf("store %s on target %s: %w", key, t.Name(), err)
	}
	return nil
}

// Countersign stores a countersignature of the object at key whose bytes
// are data: an operator vouching, with a current key, for an object whose
// signer is no longer trusted.
func Countersign(ctx context.Context, t storage.Target, key string, data []byte, namespace string, s *Signer) error {
	sig, err := s.Sign(data, namespace)
	if err != nil {
		return err
	}
	ck := CountersignatureKey(key, s.Fingerprint())
	if err := t.Put(ctx, ck, bytes.NewReader(sig), storage.PutOptions{ContentType: "text/plain"}); err != nil {
		return fmt.Errorf("store %s on target %s: %w", ck, t.Name(), err)
	}
	return nil
}

// ReadSigned reads the object at key, at most limit bytes, and returns
// its bytes only once a signature over exactly those bytes verifies
// against trust. Nothing is parsed before that. A missing object gives
// an error wrapping storage.ErrNotExist.
func ReadSigned(ctx context.Context, t storage.Target, key string, limit int64, namespace string, trust *Trust) ([]byte, error) {
	data, err := ReadBounded(ctx, t, key, limit)
	if err != nil {
		return nil, err
	}
	if _, err := VerifyStored(ctx, t, key, data, namespace, trust); err != nil {
		return nil, err
	}
	return data, nil
}

// ReadBounded reads a small object whole, refusing one larger than limit.
func ReadBounded(ctx context.Context, t storage.Target, key string, limit int64) ([]byte, error) {
	rc, err := t.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("read %s on target %s: %w", key, t.Name(), err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s on target %s: %w", key, t.Name(), err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s on target %s: %w: larger than %d bytes", key, t.Name(), ErrInvalid, limit)
	}
	return data, nil
}

// VerifyStored checks the signatures stored beside key over data: the
// writer's first, then any countersignature. It returns the fingerprint of
// the trusted key that signed. The error wraps ErrUnsigned when there is
// no signature at all and ErrUntrusted when none verifies.
func VerifyStored(ctx context.Context, t storage.Target, key string, data []byte, namespace string, trust *Trust) (string, error) {
	if trust == nil || len(trust.keys) == 0 {
		return "", ErrNoTrustedKeys
	}
	sigKeys := []string{SignatureKey(key)}
	err := t.List(ctx, key+countersignPrefix, func(oi storage.ObjectInfo) error {
		if strings.HasSuffix(oi.Key, signatureSuffix) {
			sigKeys = append(sigKeys, oi.Key)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("list signatures of %s on target %s: %w", key, t.Name(), err)
	}
	var reasons []string
	found := false
	for _, sk := range sigKeys {
		sig, err := ReadBounded(ctx, t, sk, maxSignatureSize)
		if errors.Is(err, storage.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		found = true
		fp, err := trust.Verify(data, sig, namespace)
		if err == nil {
			return fp, nil
		}
		reasons = append(reasons, strings.TrimPrefix(err.Error(), ErrUntrusted.Error()+": "))
	}
	if !found {
		return "", fmt.Errorf("%s on target %s: %w (no %s)", key, t.Name(), ErrUnsigned, SignatureKey(key))
	}
	return "", fmt.Errorf("%s on target %s: %w: %s", key, t.Name(), ErrUntrusted, strings.Join(reasons, "; "))
}
