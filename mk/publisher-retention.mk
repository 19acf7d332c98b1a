# The publisher's retention, orphan collection and disk-full tests. The
# disk-full test mounts a size-limited tmpfs (root or CAP_SYS_ADMIN); under
# make test it fails rather than skips when it cannot.
TEST_ENV += CUSTODY_TEST_REQUIRE_MOUNT=1
