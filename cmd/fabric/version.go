package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set at link time: -ldflags "-X main.version=v1.2.3".
var version = ""

// versionString is what `fabric version` prints: "fabric <versionNumber>
// <go version> <os>/<arch>".
func versionString() string {
	return fmt.Sprintf("fabric %s %s %s/%s", versionNumber(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// versionNumber is the build's version: the link-time version (the
// image build's -X main.version), else the module version, else "dev", with
// the VCS revision when known ("v1.2.3 (0123456789ab)"). It is also the
// version label of fabric_build_info.
func versionNumber() string {
	v, rev := version, ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				rev = s.Value[:12]
			}
		}
	}
	if v == "" {
		v = "dev"
	}
	if rev != "" {
		v += " (" + rev + ")"
	}
	return v
}
