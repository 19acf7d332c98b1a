package main

import (
	"strings"
	"testing"
	"time"
)

func validConfig() config {
	c := config{DataDir: "d", SignerAddr: "s", CatalogAddr: "c",
		MaxSize: 1 << 30, UploadsPerCaller: 2, Uploads: 4, DownloadsPerCaller: 2, Downloads: 4,
		ProgressTimeout: time.Minute, MinRate: 1024, SendTimeout: time.Minute, SendMinRate: 1024, ResumeTTL: time.Hour, ResumablePerCaller: 4,
		StreamsPerConn: 128, RetentionInterval: time.Hour, OrphanAge: time.Hour, KeepaliveTime: 30 * time.Second, KeepaliveTimeout: 10 * time.Second,
		Store: storeConfig{Backend: "local", KEK: "soft", SoftKEK: "kek.json"}}
	c.Config.TrustDomain, c.Config.SVIDDir, c.Config.Listen, c.Config.LogLevel = "custody.test", "x", "127.0.0.1:0", "info"
	return c
}

func TestValidateLimits(t *testing.T) {
	if err := (&config{}).validate(); err == nil {
		t.Fatal("an empty config validated")
	}
	good := validConfig()
	if err := good.validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	tests := map[string]struct {
		change func(*config)
		want   []string
	}{
		"zero limits": {func(c *config) { c.MaxSize, c.Uploads, c.StreamsPerConn = 0, 0, 0 },
			[]string{"--max-artifact-size 0", "--max-uploads 0", "--max-streams-per-connection 0"}},
		"per caller above total": {func(c *config) { c.UploadsPerCaller, c.DownloadsPerCaller = 5, 5 },
			[]string{"--max-uploads-per-caller 5 is above", "--max-downloads-per-caller 5 is above"}},
		"timeouts": {func(c *config) {
			c.ProgressTimeout, c.MinRate, c.ResumeTTL, c.KeepaliveTime = time.Millisecond, -1, -1, time.Second
			c.SendTimeout, c.SendMinRate = 0, -1
		},
			[]string{"--upload-progress-timeout", "--upload-min-rate", "--upload-resume-ttl", "--keepalive-time", "--download-progress-timeout", "--download-min-rate"}},
		"retention interval": {func(c *config) { c.RetentionInterval = time.Second }, []string{"--retention-interval 1s"}},
		"orphan age":         {func(c *config) { c.OrphanAge = time.Second }, []string{"--orphan-age 1s"}},
		"signer KEK name":    {func(c *config) { c.Store.KEK, c.Store.SignerKEK = "signer", "../Evil" }, []string{"--signer-kek"}},
		"unknown KEK":        {func(c *config) { c.Store.KEK = "pkcs11" }, []string{"want signer, vault or soft"}},
	}
	for name, tt := range tests {
		c := validConfig()
		tt.change(&c)
		err := c.validate()
		for _, w := range tt.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v, want it to name %q", name, err, w)
			}
		}
	}
}

func TestSignerKEKValidates(t *testing.T) {
	c := validConfig()
	c.Store.KEK, c.Store.SignerKEK = "signer", "publisher"
	if err := c.validate(); err != nil {
		t.Fatalf("--kek signer --signer-kek publisher: %v", err)
	}
}
