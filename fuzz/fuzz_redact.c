/*
 * fuzz_redact.c - libFuzzer target: keeping secrets out of pq.c's
 * messages. It includes src/pq.c itself, to reach the static functions that
 * do it (pq.c stays the one place they live).
 *
 * Input byte 0 picks the property:
 *  - redact: the rest is split at its first NUL into a message and a
 *    secret; after redact() into a buffer of the size the rest gives, the
 *    secret is nowhere in the message.
 *  - conninfo: the rest is a conninfo around a password (input before and
 *    after " password=<8 of a letter the input lacks>"); when
 *    parse_conninfo refuses it, its message holds no three of that letter,
 *    however the input quotes around it.
 */
#include "pq.c"

#include "fuzz.h"

/* The password: eight of a letter the input does not hold, so that three
 * of it in a message can only come from the password. 0 when the input
 * holds every letter. */
static int pick_secret(const uint8_t *data, size_t size, char secret[9])
{
    int c;
    for (c = 'A'; c <= 'z'; c++) {
        if (c > 'Z' && c < 'a')
            continue;
        if (!memchr(data, c, size)) {
            memset(secret, c, 8);
            secret[8] = '\0';
            return 1;
        }
    }
    return 0;
}

static void check_redact(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, '\0', size);
    size_t msg_len = nul ? (size_t)(nul - data) : size;
    size_t secret_len = nul ? size - msg_len - 1 : 0;
    size_t room = msg_len + 1 + (size > 0 ? data[0] % 8 : 0);
    char *msg = malloc(room), *secret = malloc(secret_len + 1);

    CHECK(msg && secret);
    memcpy(msg, data, msg_len);
    msg[msg_len] = '\0';
    memcpy(secret, nul ? (const char *)nul + 1 : "", secret_len);
    secret[secret_len] = '\0';
    /* a secret with a NUL ends at it; one with a star can meet the "***"
     * of the mask (the message's own text beside it makes it again) */
    if (strlen(secret) > 0 && !strchr(secret, '*')) {
        redact(msg, room, secret);
        CHECK(strlen(msg) < room);
        CHECK(strstr(msg, secret) == NULL);
    }
    free(msg);
    free(secret);
}

static void check_conninfo(const uint8_t *data, size_t size)
{
    char secret[9], insert[32], three[4];
    size_t cut = size ? data[0] % (size + 1) : 0, n;
    char *conninfo;
    PQconninfoOption *parsed = NULL;
    pq_error err;

    if (!pick_secret(data, size, secret))
        return;
    n = (size_t)snprintf(insert, sizeof insert, " password=%s", secret);
    conninfo = malloc(size + n + 1);
    CHECK(conninfo);
    memcpy(conninfo, data, cut);
    memcpy(conninfo + cut, insert, n);
    memcpy(conninfo + cut + n, data + cut, size - cut);
    conninfo[size + n] = '\0';
    if (!parse_conninfo(conninfo, &parsed, &err)) {
        memcpy(three, secret, 3);
        three[3] = '\0';
        CHECK(strstr(err.message, three) == NULL);
    }
    PQconninfoFree(parsed);
    free(conninfo);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1)
        check_redact(data + 1, size - 1);
    else
        check_conninfo(data + 1, size - 1);
    return 0;
}
