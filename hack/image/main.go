// Command image builds kdr's container image as an OCI archive without a
// daemon or a registry, reproducibly (internal/ociimage), and prints its
// manifest digest. `make image` runs it; the Dockerfile builds the same
// content with docker.
//
//	go run ./hack/image -name ghcr.io/kdr-io/kdr:v0.1.0 -out bin/kdr-image.tar \
//	  -file /usr/local/bin/kdr=bin/kdr \
//	  -file /etc/ssl/certs/ca-certificates.crt=/etc/ssl/certs/ca-certificates.crt \
//	  -entrypoint kdr -label org.opencontainers.image.version=v0.1.0
//
// -file is IMAGEPATH=HOSTPATH[:MODE], MODE in octal (0755, 644). Without a
// MODE, a file whose directory is named bin or sbin gets 0755, any other
// 0644: the host file's own mode is not used, since a checkout's or a
// build's umask would then change the image.
//
// -created is RFC 3339 or Unix seconds; without it the SOURCE_DATE_EPOCH
// environment variable, and without that the Unix epoch, so that two builds
// of the same files give the same digest.
//
// `ctr -n k8s.io images import bin/kdr-image.tar` loads the archive into a
// node's containerd under -name.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/kdr-io/kdr/hack/internal/cli"
	"github.com/kdr-io/kdr/internal/ociimage"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Getenv("SOURCE_DATE_EPOCH"), os.Stdout)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

// run parses args, writes the archive and prints its digest to stdout.
// sourceDateEpoch is the SOURCE_DATE_EPOCH variable's value, "" if unset.
func run(ctx context.Context, args []string, sourceDateEpoch string, stdout io.Writer) error {
	var img ociimage.Image
	var out, created string
	fl := flag.NewFlagSet("image", flag.ContinueOnError)
	fl.StringVar(&img.Name, "name", "", "image reference with a tag, such as ghcr.io/kdr-io/kdr:v0.1.0 (required)")
	fl.StringVar(&out, "out", "", "archive to write, such as bin/kdr-image.tar (required)")
	fl.Func("file", "IMAGEPATH=HOSTPATH[:MODE] to copy in, MODE octal, default 0755 in a bin or sbin directory, else 0644 (repeated)", func(s string) error {
		f, err := parseFile(s)
		if err != nil {
			return err
		}
		img.Files = append(img.Files, f)
		return nil
	})
	fl.Func("entrypoint", "entrypoint arguments, comma-separated or repeated", func(s string) error {
		img.Entrypoint = append(img.Entrypoint, strings.Split(s, ",")...)
		return nil
	})
	fl.Func("label", "KEY=VALUE label, also a manifest annotation for org.opencontainers.image.* (repeated)", func(s string) error {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return fmt.Errorf("want KEY=VALUE")
		}
		if _, dup := img.Labels[k]; dup {
			return fmt.Errorf("label %s given twice", k)
		}
		if img.Labels == nil {
			img.Labels = map[string]string{}
		}
		img.Labels[k] = v
		return nil
	})
	fl.StringVar(&created, "created", "", "image time, RFC 3339 or Unix seconds (default $SOURCE_DATE_EPOCH, else 0)")
	fl.StringVar(&img.Architecture, "arch", "", "architecture of the files, as GOARCH (default this machine's)")
	if err := cli.Parse(fl, args, stdout); err != nil {
		return err
	}
	if img.Name == "" || out == "" {
		return errors.New("-name and -out are required")
	}
	var err error
	switch {
	case created != "":
		img.Created, err = parseTime(created)
		if err != nil {
			return fmt.Errorf("-created: %w", err)
		}
	case sourceDateEpoch != "":
		img.Created, err = parseTime(sourceDateEpoch)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH: %w", err)
		}
	}
	digest, err := ociimage.WriteFile(ctx, out, img)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, digest)
	return err
}

// parseFile reads IMAGEPATH=HOSTPATH[:MODE]. A host path that itself ends
// in a colon and octal digits needs an explicit mode after it.
func parseFile(s string) (ociimage.File, error) {
	imagePath, source, ok := strings.Cut(s, "=")
	if !ok || imagePath == "" || source == "" {
		return ociimage.File{}, errors.New("want IMAGEPATH=HOSTPATH[:MODE]")
	}
	f := ociimage.File{Path: imagePath, Source: source, Mode: 0o644}
	if dir := path.Base(path.Dir(imagePath)); dir == "bin" || dir == "sbin" {
		f.Mode = 0o755
	}
	if i := strings.LastIndex(source, ":"); i >= 0 {
		if mode, err := strconv.ParseUint(source[i+1:], 8, 32); err == nil && len(source[i+1:]) >= 3 {
			f.Source, f.Mode = source[:i], fs.FileMode(mode)
		}
	}
	return f, nil
}

// parseTime reads Unix seconds, as SOURCE_DATE_EPOCH has them, or RFC 3339.
func parseTime(s string) (time.Time, error) {
	if secs, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(secs, 0), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither Unix seconds nor RFC 3339", s)
	}
	return t, nil
}
