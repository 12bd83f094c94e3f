package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/kdr-io/kdr/internal/ociimage"
)

// CachedImage returns an OCI archive of an image named ref holding one
// binary, src, at path bin in the image, which is its entrypoint. Archives are kept in the module's
// bin/node-images, named after ref and the binary's size and modification
// time, so a node starts without rebuilding images until `make tools`
// rebuilds the binary; an older archive of the same ref is removed.
func CachedImage(ctx context.Context, ref, bin, src string) (string, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", ref, err)
	}
	root, ok := moduleRoot()
	if !ok {
		return "", fmt.Errorf("image %s: not inside the module: no bin directory to cache images in", ref)
	}
	dir := filepath.Join(root, "bin", "node-images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	key := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%d\x00%d\x00entrypoint", ref, bin, fi.Size(), fi.ModTime().UnixNano()))
	base := strings.NewReplacer("/", "_", ":", "_").Replace(ref)
	archive := filepath.Join(dir, base+"-"+hex.EncodeToString(key[:6])+".tar")
	if _, err := os.Stat(archive); err == nil {
		return archive, nil
	}
	old, _ := filepath.Glob(filepath.Join(dir, base+"-*.tar"))
	img := ociimage.Image{Name: ref, Files: []ociimage.File{{Path: bin, Mode: 0o755, Source: src}}, Entrypoint: []string{bin}}
	if _, err := ociimage.WriteFile(ctx, archive, img); err != nil {
		return "", err
	}
	for _, o := range old {
		os.Remove(o)
	}
	return archive, nil
}

// commandOutput runs a command of the test process and returns its
// trimmed output; an error carries the output.
func commandOutput(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}
