package backup

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// startS3 runs a real versitygw through scripts/versitygw-up.sh.
func startS3(t *testing.T) (env map[string]string, client *s3.Client) {
	t.Helper()
	bin := os.Getenv("CUSTODY_VERSITYGW_BIN")
	if bin == "" {
		if os.Getenv("CUSTODY_TEST_REQUIRE_S3") == "1" {
			t.Fatal("CUSTODY_TEST_REQUIRE_S3=1 but CUSTODY_VERSITYGW_BIN is unset (make test-deps-s3)")
		}
		t.Skip("no S3 server: set CUSTODY_VERSITYGW_BIN (scripts/build-versitygw.sh)")
	}
	root, _ := filepath.Abs("../../..")
	cmd := exec.Command(filepath.Join(root, "scripts", "versitygw-up.sh"), filepath.Join(t.TempDir(), "gw"))
	cmd.Env = append(os.Environ(), "CUSTODY_VERSITYGW_BIN="+bin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("versitygw-up.sh: %v\n%s", err, &stderr)
	}
	env = map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	pid, _ := strconv.Atoi(env["CUSTODY_TEST_S3_PID"])
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGTERM) })
	ak, _ := os.ReadFile(env["CUSTODY_TEST_S3_ACCESS_KEY_FILE"])
	sk, _ := os.ReadFile(env["CUSTODY_TEST_S3_SECRET_KEY_FILE"])
	client = s3.New(s3.Options{Region: "us-east-1", UsePathStyle: true, BaseEndpoint: aws.String(env["CUSTODY_TEST_S3_ENDPOINT"]),
		Credentials: credentials.NewStaticCredentialsProvider(strings.TrimSpace(string(ak)), strings.TrimSpace(string(sk)), "")})
	return env, client
}

func TestPushUsesObjectLock(t *testing.T) {
	env, client := startS3(t)
	ctx := t.Context()
	set := t.TempDir()
	os.MkdirAll(filepath.Join(set, "trust"), 0o700)
	os.WriteFile(filepath.Join(set, SignatureFile), []byte("{}"), 0o400)
	os.WriteFile(filepath.Join(set, "trust", "root.json"), []byte("root"), 0o400)
	opts := func(bucket string) PushOptions {
		return PushOptions{Endpoint: env["CUSTODY_TEST_S3_ENDPOINT"], Bucket: bucket, Prefix: "2026-12-02/", PathStyle: true,
			AccessKeyFile: env["CUSTODY_TEST_S3_ACCESS_KEY_FILE"], SecretKeyFile: env["CUSTODY_TEST_S3_SECRET_KEY_FILE"], Retain: 24 * time.Hour}
	}

	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("locked"), ObjectLockEnabledForBucket: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	rep, err := Push(ctx, set, opts("locked"))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.ObjectLock || rep.Objects != 2 || rep.RetainUntil.Before(time.Now().Add(23*time.Hour)) {
		t.Fatalf("push to a locked bucket: %+v", rep)
	}
	ret, err := client.GetObjectRetention(ctx, &s3.GetObjectRetentionInput{Bucket: aws.String("locked"), Key: aws.String("2026-12-02/trust/root.json")})
	if err != nil {
		t.Fatal(err)
	}
	if ret.Retention.Mode != types.ObjectLockRetentionModeCompliance || !ret.Retention.RetainUntilDate.Equal(rep.RetainUntil) {
		t.Errorf("retention %+v, want COMPLIANCE until %s", ret.Retention, rep.RetainUntil)
	}
	// Locked objects cannot be deleted or overwritten.
	if _, err := client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("locked"), Key: aws.String("2026-12-02/trust/root.json")}); err == nil {
		if _, gerr := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("locked"), Key: aws.String("2026-12-02/trust/root.json")}); gerr != nil {
			t.Errorf("a locked object was deleted")
		}
	}
	if _, err := Push(ctx, set, opts("locked")); err == nil {
		t.Error("a second push over the same objects succeeded")
	}

	// A bucket without Object Lock: uploaded, reported unlocked; refused
	// with RequireLock.
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("plain")}); err != nil {
		t.Fatal(err)
	}
	o := opts("plain")
	o.RequireLock = true
	if _, err := Push(ctx, set, o); err == nil || !strings.Contains(err.Error(), "no Object Lock") {
		t.Errorf("RequireLock on a plain bucket: %v", err)
	}
	if rep, err := Push(ctx, set, opts("plain")); err != nil || rep.ObjectLock || rep.Objects != 2 {
		t.Errorf("plain bucket: %+v %v", rep, err)
	}
	// An unsigned set is not pushed.
	if _, err := Push(ctx, t.TempDir(), opts("plain")); err == nil {
		t.Error("an unsigned set was pushed")
	}
}
