\set x 41
select :x::int + 1;
